"""Attacks on the review desk over HTTP: CSRF, roles, stale sessions, brute force, headers."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from classifier.store.tables import decisions, sessions
from tests.review_seed import fnc_articles, seed
from tests.web_support import PASSWORD, forms, login, make_desk


@pytest.fixture
def desk(engine, corpora):
    seed(engine, list(fnc_articles(corpora, 3)))
    return make_desk(engine)


def _item_forms(client, path="/next"):
    page = client.get(path)
    assert page.status_code == 200
    return forms(page.text)


def _n(engine, table):
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar()


def test_post_without_or_with_a_foreign_csrf_token_is_403(desk):
    ann, bob = login(desk.client(), "ann"), login(desk.client(), "bob")
    f = _item_forms(ann)["approve-form"]
    bobs_token = _item_forms(bob)["approve-form"]["csrf"]
    assert bobs_token != f["csrf"]
    no_token = {k: v for k, v in f.items() if k != "csrf"}
    for data in (no_token, {**f, "csrf": ""}, {**f, "csrf": bobs_token}, {**f, "csrf": "x" * 43}):
        r = ann.post(f["__action__"], data=data, follow_redirects=False)
        assert r.status_code == 403, data
    # the same for undo, sign-out and the JSON API
    assert ann.post("/undo", data={"key": "k"}).status_code == 403
    assert ann.post("/logout", data={"csrf": bobs_token}).status_code == 403
    assert ann.post("/api/undo", json={"key": "k"},
                    headers={"X-CSRF-Token": bobs_token}).status_code == 403
    # a cross-site form post with the right token still fails on Origin
    r = ann.post(f["__action__"], data=f, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert _n(desk.engine, decisions) == 0
    assert ann.post(f["__action__"], data=f, follow_redirects=False).status_code == 303


def test_sign_in_form_needs_its_own_token(desk):
    c = desk.client()
    r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403
    c.get("/login")  # sets the cookie; a forged field still fails
    r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and _n(desk.engine, sessions) == 0


def test_editor_on_admin_route_is_403_admin_can_add_users(desk):
    ann = login(desk.client(), "ann")
    assert ann.get("/admin/users").status_code == 403
    token = _item_forms(ann)["approve-form"]["csrf"]
    r = ann.post("/admin/users", data={"csrf": token, "name": "mallory", "role": "admin"})
    assert r.status_code == 403
    root = login(desk.client(), "root")
    page = root.get("/admin/users")
    assert page.status_code == 200
    f = forms(page.text)["add-user-form"]
    r = root.post("/admin/users", data={**f, "name": "cy", "role": "editor", "password": ""})
    assert r.status_code == 201
    generated = r.text.split('id="generated-password">')[1].split("<")[0]
    assert len(generated) >= 16
    login(desk.client(), "cy", generated)
    # disabling a user ends their sessions at once
    cy = login(desk.client(), "cy", generated)
    f = forms(root.get("/admin/users").text)
    disable = next(v for v in f.values() if v["__action__"] == "/admin/users/cy/disable")
    assert root.post(disable["__action__"], data=disable, follow_redirects=False).status_code == 303
    assert cy.get("/api/queue").status_code == 401


def test_reused_session_after_logout_is_rejected(desk):
    ann = login(desk.client(), "ann")
    stolen = ann.cookies.get("evidence_session")
    f = _item_forms(ann)
    r = ann.post("/logout", data=f["logout-form"], follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _n(desk.engine, sessions) == 0
    replay = desk.client()
    replay.cookies.set("evidence_session", stolen)
    assert replay.get("/queue", follow_redirects=False).headers["location"].startswith("/login")
    assert replay.get("/api/queue").status_code == 401
    r = replay.post(f["approve-form"]["__action__"], data=f["approve-form"])
    assert r.status_code == 401 and _n(desk.engine, decisions) == 0


def test_login_attempts_are_rate_limited(desk):
    c = desk.client()
    for _ in range(5):
        token = forms(c.get("/login").text)["login-form"]["csrf"]
        r = c.post("/login", data={"name": "bob", "password": "guess", "csrf": token})
        assert r.status_code == 401
    token = forms(c.get("/login").text)["login-form"]["csrf"]
    r = c.post("/login", data={"name": "bob", "password": PASSWORD, "csrf": token})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "too many failed sign-ins" in r.text
    login(desk.client(), "ann")  # another account is unaffected


def test_security_headers(desk):
    c = login(desk.client(), "ann")
    for path in ("/queue", "/login", "/static/app.js"):
        h = c.get(path).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
    assert c.get("/queue").headers["cache-control"] == "no-store"
    assert c.get("/openapi.json").status_code == 404 and c.get("/docs").status_code == 404
