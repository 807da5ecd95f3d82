"""Helpers for the web tests: a seeded desk, signing in, reading a rendered form's fields."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
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


def type_into_login(page, name: str, password: str) -> None:
    """A Playwright page on /login → name and password typed with the keyboard only, then Enter.
    Waits for the name field's autofocus first: on a loaded 2-core machine Chromium can fire
    `load` before it applies autofocus, and keys typed in between are lost."""
    page.wait_for_function("document.activeElement && document.activeElement.name === 'name'")
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")


def free_port() -> int:
    """→ a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(proc: subprocess.Popen, url: str, *, what: str, log: Path,
            timeout_s: float = 60) -> Iterator[str]:
    """A started server process + its URL → the URL once /login answers 200; the process is
    stopped on exit. RuntimeError with the log's text if it exits or stays silent."""
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{log.read_text()}")
            try:
                if httpx.get(url + "/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer in {timeout_s:.0f} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
