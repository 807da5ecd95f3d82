"""The ledger panel on the thesis page and its Apply form, through the real app (TestClient)."""

from __future__ import annotations

import re

import pytest

from classifier import ledger, queue
from classifier.store import write
from tests.ledger_seed import add_label, story_of
from tests.web_support import forms, login, make_desk, theses


@pytest.fixture
def desk(engine):
    d = make_desk(engine)
    with write(engine) as conn:
        a = add_label(conn, title="Independent eval shows parity")
        b = add_label(conn, title="Syndicated copy", story_id=story_of(conn, a))
        c = add_label(conn, title="Cheaper inference", evidence_type="circumstantial",
                      strength="moderate")
    for label_id in (a, b, c):
        queue.decide(engine, label_id, user="ann", action="approve", version=1)
    return d


def test_thesis_page_shows_ledger_plot_items_and_triggers(desk):
    c = login(desk.client(), "ann")
    html = c.get("/thesis/oss-parity").text
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="ledger-plot"' in html
    assert html.count('class="ledger-point"') == 3  # one dot per approval
    assert html.count('class="trigger-line"') == 2
    # odds 3 × 3 × 1.25 = 11.25 → 91.8%
    assert re.search(r'id="suggested-probability">91\.8%<', html)
    assert re.search(r'id="current-probability">75\.0%<', html)
    assert "same story as label 1; counted once" in html
    assert "above-85</code> (above 85%):\n  <strong>reached</strong>" in html
    assert forms(html)["apply-form"]["percent"] == "91.8"


def test_apply_form_records_history_and_resets_the_ledger(desk):
    c = login(desk.client(), "bob")
    page = c.get("/thesis/oss-parity").text
    form = forms(page)["apply-form"]
    r = c.post(form["__action__"], data={"csrf": form["csrf"], "percent": "88",
                                         "note": "one independent run; waiting for a second"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/thesis/oss-parity?applied=1#ledger"
    html = c.get(r.headers["location"]).text
    assert re.search(r'id="current-probability">88\.0%<', html)
    assert re.search(r'id="suggested-probability">88\.0%<', html)  # evidence absorbed
    assert "one independent run; waiting for a second" in html and "<td>bob</td>" in html
    with desk.engine.connect() as conn:
        (h,) = ledger.load_history(conn, "oss-parity")
    assert (h.from_probability, h.to_probability, h.user_name) == (0.75, 0.88, "bob")
    assert h.suggested_probability == pytest.approx(11.25 / 12.25)


def test_apply_without_csrf_or_note_is_refused(desk):
    c = login(desk.client(), "ann")
    form = forms(c.get("/thesis/oss-parity").text)["apply-form"]
    r = c.post(form["__action__"], data={"percent": "60", "note": "no token"})
    assert r.status_code == 403
    r = c.post(form["__action__"], data={"csrf": form["csrf"], "percent": "60", "note": "  "})
    assert r.status_code == 422 and "note" in r.text
    r = c.post(form["__action__"], data={"csrf": form["csrf"], "percent": "100", "note": "sure"})
    assert r.status_code == 422
    with desk.engine.connect() as conn:
        assert ledger.load_history(conn, "oss-parity") == []


def test_signed_out_apply_is_refused(desk):
    c = desk.client()
    r = c.post("/thesis/oss-parity/apply", data={"percent": "60", "note": "x"},
               follow_redirects=False)
    assert r.status_code in (401, 403)
    assert theses().get("oss-parity").probability == 0.75


def test_a_stale_apply_form_is_refused(desk):
    ann = login(desk.client(), "ann")
    bob = login(desk.client(), "bob")
    form_a = forms(ann.get("/thesis/oss-parity").text)["apply-form"]
    form_b = forms(bob.get("/thesis/oss-parity").text)["apply-form"]
    assert form_a["current"] == "0.75"
    r = ann.post(form_a["__action__"], data={**form_a, "percent": "85", "note": "first"},
                 follow_redirects=False)
    assert r.status_code == 303
    r = bob.post(form_b["__action__"], data={**form_b, "percent": "60", "note": "second"})
    assert r.status_code == 409 and "changed to 85.0%" in r.text
    with desk.engine.connect() as conn:
        assert [h.to_probability for h in ledger.load_history(conn, "oss-parity")] == [0.85]
