"""The thesis page's ledger in a real browser (Chromium via Playwright, `evidence serve`):
the SVG timeline renders under the strict CSP, and the Apply form records a probability."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from classifier import ledger, queue
from classifier.store.tables import labels
from tests.web_support import PASSWORD, theses

pytestmark = pytest.mark.browser


def _approve_some(engine, thesis_id: str, n: int) -> list[int]:
    with engine.connect() as c:
        ids = c.execute(select(labels.c.id).where(labels.c.thesis_id == thesis_id,
                                                  labels.c.relevant.is_(True))
                        .order_by(labels.c.id).limit(n)).scalars().all()
    for label_id in ids:
        queue.decide(engine, label_id, user="ann", action="approve", version=1)
    return list(ids)


def _sign_in(browser, server, name: str):
    ctx = browser.new_context(base_url=server.url)
    page = ctx.new_page()
    page.goto("/login?next=/thesis/oss-parity")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/thesis/oss-parity")
    return ctx, page


def test_plot_present_and_apply_form_works(browser, desk_server, artifacts):
    approved = _approve_some(desk_server.engine, "oss-parity", 3)
    assert approved
    with desk_server.engine.connect() as c:
        expected = ledger.ledger_for(c, theses().get("oss-parity"), theses())
    ctx, page = _sign_in(browser, desk_server, "bob")
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.reload()

    plot = page.locator("svg#ledger-plot")
    plot.wait_for(state="visible")
    box = plot.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 150  # laid out, not an empty element
    assert page.locator("svg#ledger-plot path.applied-line").count() == 1
    assert page.locator("svg#ledger-plot path.ledger-line").count() == 1
    assert page.locator("svg#ledger-plot circle.ledger-point").count() == len(approved)
    assert page.locator("svg#ledger-plot line.trigger-line").count() == 2
    suggested = f"{expected.suggested * 100:.1f}%"
    assert page.inner_text("#suggested-probability") == suggested
    assert page.inner_text("#current-probability") == "75.0%"
    assert page.locator("#ledger-items tbody tr").count() == len(expected.lines)
    assert "direct-strong items" in page.inner_text("#trigger-distances") or \
        "reached" in page.inner_text("#trigger-distances")
    assert page.input_value("#apply-percent") == f"{expected.suggested * 100:.1f}"
    page.screenshot(path=str(artifacts / "thesis-ledger.png"), full_page=True)

    page.fill("#apply-percent", "80")
    page.fill("#apply-note", "three items approved; applying from the browser")
    page.click("#apply-button")
    page.wait_for_url(re.compile(r".*/thesis/oss-parity\?applied=1#ledger$"))
    assert page.inner_text("#current-probability") == "80.0%"
    assert page.is_visible("#applied-notice")
    history = page.inner_text("#probability-history")
    assert "three items approved; applying from the browser" in history and "bob" in history
    # the applied value now draws a step in the plot: two segments in the applied line
    assert page.get_attribute("svg#ledger-plot path.applied-line", "d").count("V") == 1
    with desk_server.engine.connect() as c:
        (h,) = ledger.load_history(c, "oss-parity")
    assert (h.from_probability, h.to_probability, h.user_name) == (0.75, 0.8, "bob")
    assert h.suggested_probability == pytest.approx(expected.suggested)
    assert csp_errors == []
    ctx.close()


def test_apply_form_refuses_an_empty_note_in_the_browser(browser, desk_server):
    ctx, page = _sign_in(browser, desk_server, "ann")
    page.fill("#apply-percent", "40")
    page.click("#apply-button")  # the note is required: the browser does not submit
    assert page.evaluate("document.querySelector('#apply-note').validity.valueMissing")
    assert "/thesis/oss-parity" in page.url and "applied" not in page.url
    with desk_server.engine.connect() as c:
        assert ledger.load_history(c, "oss-parity") == []
    ctx.close()
