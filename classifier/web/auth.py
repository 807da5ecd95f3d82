"""Who is asking, and may they: sessions, roles and CSRF on every request; sign-in/out; users.

Dependencies other routers use:
    current_user(request) -> User                 signed in, or NotSignedIn (login page / 401)
    require_role("admin") -> dependency -> User   or Forbidden (403)
    csrf_guard                                    app-wide: every POST/PUT/PATCH/DELETE must carry
                                                  the session's token (form field `csrf` or header
                                                  `X-CSRF-Token`); sign-in: a double-submit cookie
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from classifier import queue, users
from classifier.errors import Forbidden
from classifier.users import Session, User
from classifier.web.templating import render

SESSION_COOKIE = "evidence_session"
LOGIN_CSRF_COOKIE = "evidence_login_csrf"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

router = APIRouter()


class NotSignedIn(Exception):
    """No live session: HTML GETs go to the sign-in page, everything else gets 401."""


def _desk(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.desk


def client_ip(request: Request) -> str:
    """Request → the peer address (proxies are not trusted: X-Forwarded-For is ignored)."""
    return request.client.host if request.client else "unknown"


def session_of(request: Request) -> Session:
    """Request → its live session (cached on request.state), or NotSignedIn."""
    try:
        sess = request.state.session
    except AttributeError:
        sess = request.state.session = users.load_session(_desk(request).engine,
                                                          request.cookies.get(SESSION_COOKIE))
    if sess is None:
        raise NotSignedIn()
    return sess


def current_user(request: Request) -> User:
    """Request → the signed-in user, or NotSignedIn."""
    return session_of(request).user


def require_role(role: users.Role) -> Callable[[Request], User]:
    """Role → a dependency returning the user if they hold it (admin holds all), else Forbidden."""

    def dependency(request: Request) -> User:
        user = current_user(request)
        if user.role != role and user.role != "admin":
            raise Forbidden(f"this page needs the {role} role; you are {user.role}")
        return user

    return dependency


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(require_role("admin"))]


async def csrf_guard(request: Request) -> None:
    """App-wide dependency: a state-changing request without the right CSRF token is Forbidden."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise Forbidden("cross-origin request refused")
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        token = (await request.form()).get("csrf")
    if request.url.path == "/login":
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not cookie or not token or not hmac.compare_digest(cookie, str(token)):
            raise Forbidden("the sign-in form expired; reload the page and try again")
        return
    sess = await run_in_threadpool(session_of, request)
    if not users.csrf_ok(sess, token if isinstance(token, str) else None):
        raise Forbidden("missing or wrong CSRF token")


def _safe_next(target: str | None) -> str:
    # only same-site paths: no scheme, no host, no "//evil" or "/\\evil"
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/queue"


def _login_form(request: Request, next: str, error: str | None = None,
                status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", {"login_csrf": token, "next": _safe_next(next),
                                          "error": error}, status_code=status_code)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                    secure=_desk(request).settings.secure_cookies)
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/queue") -> Response:
    """Sign-in form with a fresh double-submit token in a cookie and a hidden field."""
    return _login_form(request, next)


@router.post("/login")
def login(request: Request, name: Annotated[str, Form()], password: Annotated[str, Form()],
          next: Annotated[str, Form()] = "/queue") -> Response:
    """Name, password → session cookie and redirect; wrong → the form (401); too many → 429."""
    desk = _desk(request)
    try:
        user = users.authenticate(desk.engine, name, password, ip=client_ip(request))
    except users.RateLimited as e:
        resp = _login_form(request, next, error=str(e), status_code=429)
        resp.headers["retry-after"] = str(e.retry_after)
        return resp
    if user is None:
        return _login_form(request, next, error="wrong name or password", status_code=401)
    token, _ = users.open_session(desk.engine, user, ip=client_ip(request))
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", path="/",
                    secure=desk.settings.secure_cookies,
                    max_age=int(users.SESSION_TTL.total_seconds()))
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, user: CurrentUser) -> Response:
    """End the session server-side, release the user's claims, clear the cookie."""
    desk = _desk(request)
    users.close_session(desk.engine, request.cookies.get(SESSION_COOKIE))
    queue.release(desk.engine, user.name)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, admin: AdminUser) -> Response:
    """Admin: the users and a form to add one."""
    return render(request, "users.html", {"users": users.list_users(_desk(request).engine)})


@router.post("/admin/users", response_class=HTMLResponse)
def add_user(request: Request, admin: AdminUser, name: Annotated[str, Form()],
             role: Annotated[str, Form()] = "editor",
             password: Annotated[str, Form()] = "") -> Response:
    """Admin: add a user; a blank password is generated and shown once on the result page."""
    shown = password or users.generate_password()
    users.add_user(_desk(request).engine, name.strip(), shown, role=role)  # type: ignore[arg-type]
    return render(request, "users.html", {
        "users": users.list_users(_desk(request).engine), "added": name.strip(),
        "generated": None if password else shown}, status_code=201)


@router.post("/admin/users/{name}/disable")
def disable_user(request: Request, admin: AdminUser, name: str,
                 disabled: Annotated[bool, Form()] = True) -> Response:
    """Admin: disable (or re-enable) a user; disabling ends their sessions."""
    if name == admin.name and disabled:
        raise Forbidden("you cannot disable yourself")
    users.set_disabled(_desk(request).engine, name, disabled)
    return RedirectResponse("/admin/users", status_code=303)
