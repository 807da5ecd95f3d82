"""Real-browser fixtures: Debian's Chromium driven by Playwright (no browser download), and the
review desk served by `evidence serve` (uvicorn) on 127.0.0.1 against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifier import users
from tests.review_seed import fnc_articles, seed
from tests.web_support import PASSWORD, ROOT, free_port, serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium from /usr/bin/chromium (fails clearly if it is not installed)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `apt-get install chromium` (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Server:
    """A running `evidence serve` process: its base URL and the database it serves."""

    def __init__(self, url: str, engine) -> None:  # type: ignore[no-untyped-def]
        self.url, self.engine = url, engine


def start_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """Database URL → base URL of `python -m classifier serve` on a free 127.0.0.1 port."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "classifier", "serve", "--db", db_url, "--port", str(port),
             "--theses", str(ROOT / "theses.toml")], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    with serving(proc, f"http://127.0.0.1:{port}", what="evidence serve", log=log) as url:
        yield url


@pytest.fixture
def desk_server(engine, db_url, corpora, tmp_path):
    """A seeded desk (8 FNC-1 articles × 3 theses; editors ann, bob; admin root) being served."""
    seed(engine, list(fnc_articles(corpora, 8)), story_of={7: 0})
    for name, role in (("ann", "editor"), ("bob", "editor"), ("root", "admin")):
        users.add_user(engine, name, PASSWORD, role=role)  # type: ignore[arg-type]
    for url in start_server(db_url, tmp_path):
        yield Server(url, engine)


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the project root (screenshots kept after the run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
