"""Helpers for the web tests: a seeded desk, signing in, reading a rendered form's fields."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from classifier import users
from classifier.config import ThesesFile, load_theses
from classifier.web import create_app

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


def theses() -> ThesesFile:
    """→ the project's theses.toml (the three theses the seed labels against)."""
    return load_theses(ROOT / "theses.toml")


@dataclass
class Desk:
    engine: Engine
    client_factory: object

    def client(self) -> TestClient:
        return self.client_factory()  # type: ignore[operator]


def make_desk(engine: Engine) -> Desk:
    """Engine → a desk app with users ann, bob (editors) and root (admin); clients on demand."""
    for name, role in (("ann", "editor"), ("bob", "editor"), ("root", "admin")):
        users.add_user(engine, name, PASSWORD, role=role)  # type: ignore[arg-type]
    app = create_app(engine, theses())
    return Desk(engine=engine, client_factory=lambda: TestClient(app, base_url="http://testserver"))


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, str]] = {}
        self._current: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = a.get("id") or f"form{len(self.forms)}"
            self.forms[self._current] = {"__action__": a.get("action", "")}
        elif self._current and tag == "input" and a.get("name"):
            self.forms[self._current][a["name"]] = a.get("value", "")
        elif self._current and tag == "select":
            self._select = a.get("name")
        elif self._current and self._select and tag == "option" and "selected" in a:
            self.forms[self._current][self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "select":
            self._select = None


def forms(html: str) -> dict[str, dict[str, str]]:
    """Rendered page → {form id: {field name: value}} (hidden inputs, inputs, selected options)."""
    p = _Forms()
    p.feed(html)
    return p.forms


def login(client: TestClient, name: str, password: str = PASSWORD) -> TestClient:
    """Client, credentials → the same client, signed in (asserts the redirect)."""
    page = client.get("/login")
    token = forms(page.text)["login-form"]["csrf"]
    r = client.post("/login", data={"name": name, "password": password, "csrf": token,
                                    "next": "/queue"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    return client
