"""The review desk's web app: `create_app(engine, theses)` → FastAPI, server-rendered with Jinja2.

Layout (each router its own module; the app only wires them):
    auth.py            sign-in, sign-out, users admin; the dependencies every route uses:
                       `current_user`, `require_role("admin")`, and the app-wide CSRF guard
    review_routes.py   queue, item, decisions, undo, thesis, feeds health, LLM calls, JSON API
    templating.py      `render(request, template, context)`; base.html's blocks
    ledger_routes.py   (optional, the ledger's) included when present; it may add thesis-page
                       panels with `register_thesis_panel`

Every response carries a strict Content-Security-Policy: scripts only from /static (no inline
script, no eval), no third-party anything, forms post only to this origin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection, Engine

from classifier.config import ThesesFile, ThesisConfig
from classifier.queue import LEASE

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # following an article link leaks no desk URL
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
OPTIONAL_ROUTERS = ("classifier.web.ledger_routes",)


@dataclass(frozen=True)
class WebSettings:
    """Knobs of the web app; defaults suit a newsroom on one machine."""

    lease: timedelta = LEASE
    secure_cookies: bool = False  # set when served over HTTPS (behind a proxy)
    page_size: int = 50


@dataclass(frozen=True)
class ThesisPanel:
    """An extra section of the thesis page: a template and the function that fills it."""

    template: str
    context: Callable[[Connection, str, ThesisConfig | None, ThesesFile], dict[str, Any]]


THESIS_PANELS: list[ThesisPanel] = []


def register_thesis_panel(template: str,
                          context: Callable[[Connection, str, ThesisConfig | None, ThesesFile],
                                            dict[str, Any]]) -> None:
    """Template, (conn, thesis id, its config, the theses file) → context → a thesis-page panel."""
    if all(p.template != template for p in THESIS_PANELS):
        THESIS_PANELS.append(ThesisPanel(template, context))


@dataclass
class DeskState:
    """What routes reach through `request.app.state.desk`."""

    engine: Engine
    theses: ThesesFile
    settings: WebSettings = field(default_factory=WebSettings)


class SecurityHeaders:
    """ASGI middleware: security headers on every response, `no-store` on all but static files."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(engine: Engine, theses: ThesesFile | None = None, *,
               settings: WebSettings | None = None) -> FastAPI:
    """Migrated engine, theses → the review desk ASGI app (routers, CSRF guard, headers, static)."""
    from fastapi import Depends

    from classifier.web import auth, errors, review_routes

    app = FastAPI(title="evidence desk", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(auth.csrf_guard)])
    app.state.desk = DeskState(engine=engine, theses=theses or ThesesFile(),
                               settings=settings or WebSettings())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(auth.router)
    app.include_router(review_routes.router)
    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it imports is missing
                raise
            continue
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(SecurityHeaders)
    return app
