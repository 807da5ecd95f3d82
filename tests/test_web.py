"""The review desk over HTTP (in-process ASGI client): pages, decisions, conflicts, undo, API."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from classifier.cli import main
from classifier.store.tables import decisions, labels
from tests.review_seed import SeedArticle, fnc_articles, seed
from tests.web_support import forms, login, make_desk


@pytest.fixture
def desk(engine, corpora):
    items = list(fnc_articles(corpora, 6))
    # item 5 is another copy of item 0's story
    seed(engine, items, story_of={5: 0})
    return make_desk(engine)


def _n_decisions(engine):
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(decisions)).scalar()


def _state(engine, label_id):
    with engine.connect() as c:
        return c.execute(select(labels.c.review_state).where(labels.c.id == label_id)).scalar()


def _open_next(client, query=""):
    r = client.get("/next" + query, follow_redirects=False)
    assert r.status_code == 303
    loc = r.headers["location"]
    label_id = int(re.match(r"/item/(\d+)", loc).group(1))
    return label_id, client.get(loc)


def test_sign_in_required_and_cookie_flags(desk):
    c = desk.client()
    r = c.get("/queue?thesis=oss-parity", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fqueue%3Fthesis%3Doss-parity"
    assert c.get("/api/queue").status_code == 401
    page = c.get("/login")
    token = forms(page.text)["login-form"]["csrf"]
    bad = c.post("/login", data={"name": "ann", "password": "nope", "csrf": token})
    assert bad.status_code == 401 and "wrong name or password" in bad.text
    token = forms(bad.text)["login-form"]["csrf"]
    r = c.post("/login", data={"name": "ann", "password": "correct horse battery staple",
                               "csrf": token, "next": "//evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/queue"  # no open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "evidence_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert c.get("/queue").status_code == 200


def test_queue_page_lists_in_order_with_filters(desk):
    c = login(desk.client(), "ann")
    r = c.get("/queue")
    assert r.status_code == 200 and "18 pending" in r.text
    ids = [int(x) for x in re.findall(r'class="queue-row[^"]*" data-href="/item/(\d+)', r.text)]
    with desk.engine.connect() as conn:
        from classifier import queue
        expected = [i.label_id for i in queue.list_queue(conn, queue.QueueFilter())[0]]
    assert ids == expected
    r = c.get("/queue?thesis=ev-share-eu&direction=supports")
    assert r.status_code == 200 and "ev-share-eu" in r.text
    assert c.get("/queue?direction=sideways").status_code == 422
    assert c.get("/api/queue?thesis=oss-parity").json()["total"] == 6


def test_item_page_shows_everything_an_editor_needs(desk):
    c = login(desk.client(), "ann")
    with desk.engine.connect() as conn:
        row = conn.execute(select(labels).where(labels.c.article_id == 1,
                                                labels.c.relevant.is_(True))).first()
    r = c.get(f"/item/{row.id}")
    assert r.status_code == 200
    html = r.text
    assert f"<mark>{row.quotes[0]}" in html.replace("&#39;", "'").replace("&#34;", '"')
    assert "Scope:" in html and "Triggers" in html  # the thesis with scope and triggers
    assert 'id="other-labels"' in html and html.count('href="/item/') >= 2
    assert "This is the only copy" not in html  # article 1 has a second copy (article 6)
    assert "%.2f" % row.confidence in html and "Proposal" in html  # confidence, rationale
    assert "LLM calls (1)" in html  # stage 5's call through the scripted backend
    assert set(forms(html)) >= {"approve-form", "reject-form", "skip-form", "correct-form",
                                "undo-form", "logout-form"}
    calls = c.get(f"/item/{row.id}/calls")
    assert calls.status_code == 200 and "Attempt 1" in calls.text and "scripted" in calls.text
    assert c.get("/item/99999").status_code == 404


def test_decisions_through_forms(desk):
    c = login(desk.client(), "ann")
    first, page = _open_next(c)
    f = forms(page.text)["approve-form"]
    r = c.post(f["__action__"], data=f, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/next"
    assert _state(desk.engine, first) == "approved"

    second, page = _open_next(c)
    assert second != first
    f = forms(page.text)["correct-form"]
    f.update(relevant="true", evidence_type="circumstantial", direction="neutral",
             strength="weak", note="a proxy only")
    assert c.post(f["__action__"], data=f, follow_redirects=False).status_code == 303
    assert _state(desk.engine, second) == "corrected"

    third, page = _open_next(c)
    f = forms(page.text)["correct-form"]
    f.update(relevant="true", evidence_type="", direction="", strength="")
    r = c.post(f["__action__"], data=f)
    assert r.status_code == 422 and "relevant=true requires" in r.text
    f = forms(page.text)["reject-form"]
    assert c.post(f["__action__"], data={**f, "note": "off topic"},
                  follow_redirects=False).status_code == 303
    assert _state(desk.engine, third) == "rejected"
    assert _n_decisions(desk.engine) == 3


def test_stale_form_gets_the_conflict_page_and_double_submit_is_one_decision(desk):
    c = login(desk.client(), "ann")
    label_id, page = _open_next(c)
    approve, reject = forms(page.text)["approve-form"], forms(page.text)["reject-form"]
    r1 = c.post(approve["__action__"], data=approve, follow_redirects=False)
    r2 = c.post(approve["__action__"], data=approve, follow_redirects=False)  # double submit
    assert r1.status_code == r2.status_code == 303
    assert _n_decisions(desk.engine) == 1
    r = c.post(reject["__action__"], data=reject)  # the same page, now stale
    assert r.status_code == 409 and 'id="conflict"' in r.text and "changed since" in r.text
    assert f'href="/item/{label_id}"' in r.text
    assert _state(desk.engine, label_id) == "approved" and _n_decisions(desk.engine) == 1


def test_two_editors_never_get_the_same_item(desk):
    ann, bob = login(desk.client(), "ann"), login(desk.client(), "bob")
    a_id, _ = _open_next(ann)
    b_id, _ = _open_next(bob)
    assert a_id != b_id
    r = bob.get(f"/item/{a_id}")  # bob opens ann's item directly: read-only, no forms
    assert r.status_code == 200 and "ann is reviewing this item" in r.text
    assert "approve-form" not in forms(r.text)


def test_skip_and_undo(desk):
    c = login(desk.client(), "ann")
    first, page = _open_next(c)
    f = forms(page.text)["skip-form"]
    assert c.post(f["__action__"], data=f, follow_redirects=False).status_code == 303
    second, page = _open_next(c)
    assert second != first and _state(desk.engine, first) == "pending"
    f = forms(page.text)["approve-form"]
    c.post(f["__action__"], data=f, follow_redirects=False)
    u = forms(page.text)["undo-form"]
    r = c.post("/undo", data=u, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/item/{second}?notice=undone"
    assert _state(desk.engine, second) == "pending"
    with desk.engine.connect() as conn:
        acts = conn.execute(select(decisions.c.action).order_by(decisions.c.id)).scalars().all()
    assert acts == ["skip", "approve", "undo"]
    page = c.get(r.headers["location"])
    u = forms(page.text)["undo-form"]
    r = c.post("/undo", data=u, follow_redirects=False)
    assert r.headers["location"] == "/queue?notice=nothing-to-undo"


def test_j_k_neighbours_follow_review_order(desk):
    c = login(desk.client(), "ann")
    with desk.engine.connect() as conn:
        from classifier import queue
        order = [i.label_id for i in queue.list_queue(conn, queue.QueueFilter(), limit=99)[0]]
    r = c.get(f"/item/{order[3]}/next", follow_redirects=False)
    assert r.headers["location"] == f"/item/{order[4]}"
    r = c.get(f"/item/{order[3]}/prev?thesis=", follow_redirects=False)
    assert r.headers["location"] == f"/item/{order[2]}"
    r = c.get(f"/item/{order[0]}/prev", follow_redirects=False)
    assert r.headers["location"] == "/queue?notice=end"
    r = c.get(f"/item/{order[-1]}/next", follow_redirects=False)
    assert r.headers["location"] == "/queue?notice=end"


def test_thesis_theses_and_feeds_pages(desk):
    c = login(desk.client(), "ann")
    label_id, page = _open_next(c, "?thesis=oss-parity")
    f = forms(page.text)["approve-form"]
    c.post(f["__action__"], data=f, follow_redirects=False)
    r = c.get("/thesis/oss-parity")
    assert r.status_code == 200 and f'href="/item/{label_id}"' in r.text
    assert "Open-source frontier parity" in r.text and "above-85" in r.text
    assert c.get("/thesis/no-such-thesis").status_code == 404
    assert "Open-source frontier parity" in c.get("/theses").text
    feeds = c.get("/feeds")
    assert feeds.status_code == 200 and "wire" in feeds.text


def test_json_api(desk):
    c = login(desk.client(), "ann")
    q = c.get("/api/queue?limit=2").json()
    assert q["total"] == 18 and len(q["items"]) == 2
    item = q["items"][0]
    page = c.get(f"/item/{item['label_id']}")
    token = forms(page.text)["approve-form"]["csrf"]
    body = {"action": "approve", "version": item["version"], "key": "api-1"}
    assert c.post(f"/api/labels/{item['label_id']}/decisions", json=body).status_code == 403
    h = {"X-CSRF-Token": token}
    r = c.post(f"/api/labels/{item['label_id']}/decisions", json=body, headers=h)
    assert r.status_code == 201 and r.json()["to_state"] == "approved"
    assert c.post(f"/api/labels/{item['label_id']}/decisions", json=body,
                  headers=h).status_code == 200  # replayed key
    stale = c.post(f"/api/labels/{item['label_id']}/decisions",
                   json={**body, "key": "api-2", "action": "reject"}, headers=h)
    assert stale.status_code == 409 and stale.json()["error"] == "conflict"
    d = c.get("/api/decisions").json()
    assert [x["action"] for x in d["decisions"]] == ["approve"]
    one = c.get(f"/api/labels/{item['label_id']}").json()
    assert one["item"]["review_state"] == "approved" and len(one["decisions"]) == 1
    assert c.post("/api/undo", json={"key": "u-1"}, headers=h).json()["action"] == "undo"


def test_cli_user_add_and_export(engine, corpora, tmp_path, db_url):
    runner = CliRunner()
    r = runner.invoke(main, ["user", "add", "eve", "--role", "editor", "--db", db_url],
                      input="a long enough password\na long enough password\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["user", "add", "max", "--role", "admin", "--generate", "--db", db_url])
    assert r.exit_code == 0 and "shown only now" in r.output
    r = runner.invoke(main, ["user", "add", "eve", "--generate", "--db", db_url])
    assert r.exit_code == 1 and "already exists" in r.output
    r = runner.invoke(main, ["user", "add", "short", "--db", db_url], input="abc\nabc\n")
    assert r.exit_code == 1 and "too short" in r.output

    ids = seed(engine, list(fnc_articles(corpora, 2)), theses=("oss-parity",))
    from classifier import queue
    queue.decide(engine, ids[0], user="eve", action="approve", version=1, note="clear")
    queue.decide(engine, ids[1], user="eve", action="reject", version=1)
    r = runner.invoke(main, ["export", "--state", "approved", "--format", "jsonl", "--db", db_url])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["review_state"] == "approved"
    assert rows[0]["label"]["relevant"] is not None and rows[0]["decided_by"] == "eve"
    assert rows[0]["thesis"] == "oss-parity" and rows[0]["article"]["text"]
    out = tmp_path / "all.csv"
    r = runner.invoke(main, ["export", "--state", "approved", "--state", "rejected", "--format",
                             "csv", "--out", str(out), "--db", db_url])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,thesis,review_state") and len(lines) == 3


def test_hostile_text_is_escaped(engine):
    evil = SeedArticle(
        title='<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">',
        text=('Body <script>window.__pwned=3</script> and <a href="javascript:window.__pwned=4">'
              'click</a> and <svg onload="window.__pwned=5"></svg> '
              '<form action="https://evil.example/"><input name=q></form> ' * 5),
        url="javascript:window.__pwned=6")
    (label_id, *_) = seed(engine, [evil], theses=("oss-parity",))
    desk = make_desk(engine)
    c = login(desk.client(), "ann")
    html = c.get(f"/item/{label_id}").text
    assert "<script>window" not in html and "&lt;script&gt;window.__pwned=1" in html
    assert 'href="javascript:' not in html and "<svg" not in html and "<img src=x" not in html
    assert 'action="https://evil.example/"' not in html
    # no inline script at all, and no event-handler attributes, anywhere we render
    for path in (f"/item/{label_id}", "/queue", "/thesis/oss-parity", "/feeds", "/login"):
        page = c.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert not re.search(r"<[^>]+\son\w+\s*=", page), path


def test_highlight_matches_quotes_like_the_grounding_check():
    from classifier.web.templating import highlight, safe_href
    segs = highlight("He said \u201chello   world\u201d \u2014 then left. Again he said",
                     ['said "hello world" - then', "he said", ""])
    assert [s for s, q in segs if q] == ["said \u201chello   world\u201d \u2014 then", "he said"]
    assert "".join(s for s, _ in segs).startswith("He said")
    assert safe_href("https://example.org/a?b=1") == "https://example.org/a?b=1"
    for bad in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:x", "java\tscript:x",
                "data:text/html,x", "//evil.example", "&#106;avascript:x", "http:/x"):
        assert safe_href(bad) is None, bad


def test_serve_warns_loudly_when_not_on_loopback(db_url, tmp_path):
    import subprocess
    import sys

    from tests.web_support import ROOT
    # 192.0.2.1 (TEST-NET-1) is not a local address: the warning prints, then the bind fails, so
    # nothing is ever exposed by this test.
    p = subprocess.run([sys.executable, "-m", "classifier", "serve", "--db", db_url, "--host",
                        "192.0.2.1", "--port", "8765", "--theses", str(ROOT / "theses.toml")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert "WARNING: binding 192.0.2.1:8765" in p.stderr
    assert "reachable from the network" in p.stderr
    assert "No users yet" in p.stderr
    assert p.returncode != 0
    from classifier.cli.review import _is_loopback
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5")
