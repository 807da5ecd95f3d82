"""The offline demo: a local news site on 127.0.0.1 serving the bundled demo set, and one pipeline
run against it into a fresh database.

    demo_data/feeds/   tech.rss (RSS 2.0), wire.rss (RSS 2.0), policy.atom (Atom); links carry
                       a {{BASE}} placeholder that the server fills with its own address
    demo_data/pages/   19 article pages on three made-up sites, around the three theses in
                       demo_data/theses.toml (a copy of the repo's theses.toml), plus one page of
                       garbage bytes; BROKEN paths answer 500, missing paths 404
    demo_data/theses.toml
    demo_data/expected.jsonl  the demo set authors' label for every (article, thesis) pair
                       (read by demo_summary.py)

The demo also creates the review desk's `demo` editor with a fresh random password each time
(`demo_login`), so its labels can be looked at right away.

Nothing here reaches the network: the server binds 127.0.0.1 on an ephemeral port, and the run
allows private addresses for itself only (settings.net.allow_private_networks).
"""

from __future__ import annotations

import hashlib
import shlex
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL

from classifier import users
from classifier.config import FeedConfig, FeedsFile, Settings, ThesesFile, load_theses
from classifier.records import Record, RunCounts
from classifier.store.tables import articles, entries, feeds, skips

DEMO_DATA = Path(str(files("classifier") / "demo_data"))
FEED_FILES = {  # feed name → (file, content type)
    "northwind-ai": ("tech.rss", "application/rss+xml; charset=utf-8"),
    "continental-wire": ("wire.rss", "application/rss+xml; charset=utf-8"),
    "brussels-ledger": ("policy.atom", "application/atom+xml; charset=utf-8"),
}
DEMO_USER = "demo"
# A page that exists in the feed but whose server is broken.
BROKEN = {"/pages/wire/2026/11/rail-strike-live.html": 500}


def demo_theses() -> ThesesFile:
    """→ the theses the demo set was written around (packaged copy of the repo's theses.toml)."""
    return load_theses(DEMO_DATA / "theses.toml")


def demo_feeds(base_url: str) -> FeedsFile:
    """Server base URL → FeedsFile with the three demo feeds, watched for every thesis."""
    return FeedsFile(
        feed=[
            FeedConfig(name=name, url=f"{base_url}/feeds/{file}", tags=["demo"], poll_minutes=60)
            for name, (file, _) in FEED_FILES.items()
        ]
    )


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        status, ctype, body = self.server.respond(self.path)
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if status == 200 and self.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        self.server.log.append((self.path, status))
        self.send_response(status)
        if status in (200, 304):
            self.send_header("ETag", etag)
        if body:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # requests are kept in server.log; stderr stays for the CLI's output


class DemoServer(ThreadingHTTPServer):
    """HTTP server on 127.0.0.1 (ephemeral port) for the demo set; `.log` lists (path, status)."""

    daemon_threads = True

    def __init__(self, root: Path = DEMO_DATA) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.log: list[tuple[str, int]] = []
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"

    def respond(self, raw_path: str) -> tuple[int, str, bytes]:
        """Request path → (status, content type, body) from the demo files."""
        path = raw_path.split("?")[0].split("#")[0]
        if path in BROKEN:
            return BROKEN[path], "text/plain", b"Internal Server Error\n"
        for file, ctype in FEED_FILES.values():
            if path == f"/feeds/{file}":
                text = (self.root / "feeds" / file).read_text(encoding="utf-8")
                return 200, ctype, text.replace("{{BASE}}", self.base_url).encode("utf-8")
        if path.startswith("/pages/") and ".." not in path:
            target = self.root / path.lstrip("/")
            if target.is_file():
                return 200, "text/html; charset=utf-8", target.read_bytes()
        return 404, "text/html; charset=utf-8", b"<html><body><h1>404 Not Found</h1></body></html>"


@contextmanager
def serve(root: Path = DEMO_DATA) -> Iterator[DemoServer]:
    """→ a running DemoServer in a background thread, shut down on exit."""
    server = DemoServer(root)
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class SkipRow(Record):
    """One entry the run skipped or failed, for the report."""

    feed: str
    title: str
    url: str | None
    kind: str
    stage: str
    reason: str
    detail: str


class StoryRow(Record):
    """One story with more than one article: the near-duplicate clusters stage 3 found."""

    story_id: int
    titles: tuple[str, ...]
    feeds: tuple[str, ...]


class DemoReport(Record):
    """What the demo run did: the run's counts, then per-item detail for the printout."""

    base_url: str
    db_url: str
    counts: RunCounts
    entries: int
    articles: int
    from_summary: int
    stories: int
    skipped: tuple[SkipRow, ...]
    multi_stories: tuple[StoryRow, ...]
    requests: int


def run_demo(
    engine: Engine,
    settings: Settings,
    *,
    theses: ThesesFile | None = None,
    backend: Any = None,
    progress: Any = None,
    label_limit: int | None = None,
) -> DemoReport:
    """Migrated fresh engine + settings → serve the demo set, run the pipeline once → DemoReport."""
    from classifier.pipeline import run_once

    demo_settings = settings.model_copy(
        update={"net": settings.net.model_copy(update={"allow_private_networks": True})}
    )
    with serve() as server:
        counts = run_once(
            engine,
            demo_settings,
            demo_feeds(server.base_url),
            theses or demo_theses(),
            backend=backend,
            progress=progress,
            label_limit=label_limit,
        )
        requests = len(server.log)
    return report(
        engine,
        counts,
        base_url=server.base_url,
        db_url=engine.url.render_as_string(hide_password=True),
        requests=requests,
    )


def report(
    engine: Engine, counts: RunCounts, *, base_url: str, db_url: str, requests: int
) -> DemoReport:
    """Engine after a run → DemoReport (skips with reasons, stories with several articles)."""
    with engine.connect() as conn:
        n_entries = conn.execute(select(func.count()).select_from(entries)).scalar_one()
        n_articles = conn.execute(select(func.count()).select_from(articles)).scalar_one()
        n_summary = conn.execute(
            select(func.count()).select_from(articles).where(articles.c.extracted_from == "summary")
        ).scalar_one()
        n_stories = conn.execute(
            select(func.count(func.distinct(articles.c.story_id)))
        ).scalar_one()
        skip_rows = conn.execute(
            select(
                feeds.c.name,
                entries.c.title,
                skips.c.url,
                skips.c.kind,
                skips.c.stage,
                skips.c.reason,
                skips.c.detail,
            )
            .select_from(
                skips.join(entries, entries.c.id == skips.c.entry_id).join(
                    feeds, feeds.c.id == entries.c.feed_id
                )
            )
            .order_by(skips.c.id)
        ).all()
        multi = (
            conn.execute(
                select(articles.c.story_id)
                .group_by(articles.c.story_id)
                .having(func.count() > 1)
                .order_by(articles.c.story_id)
            )
            .scalars()
            .all()
        )
        stories = []
        for sid in multi:
            rows = conn.execute(
                select(articles.c.title, feeds.c.name)
                .select_from(articles.outerjoin(feeds, feeds.c.id == articles.c.feed_id))
                .where(articles.c.story_id == sid)
                .order_by(articles.c.id)
            ).all()
            stories.append(
                StoryRow(
                    story_id=sid,
                    titles=tuple(r.title for r in rows),
                    feeds=tuple(r.name or "" for r in rows),
                )
            )
    return DemoReport(
        base_url=base_url,
        db_url=db_url,
        counts=counts,
        entries=n_entries,
        articles=n_articles,
        from_summary=n_summary,
        stories=n_stories,
        requests=requests,
        skipped=tuple(
            SkipRow(
                feed=r.name,
                title=r.title,
                url=r.url,
                kind=r.kind,
                stage=r.stage,
                reason=r.reason,
                detail=r.detail,
            )
            for r in skip_rows
        ),
        multi_stories=tuple(stories),
    )


# ---------------------------------------------------------------------------------------------
# The demo's editor and how to open the desk on the demo database
# ---------------------------------------------------------------------------------------------


class DemoLogin(Record):
    """The demo's editor: name, the password shown once, and whether an earlier one was replaced."""

    name: str
    password: str
    replaced: bool


def had_demo_user(path: Path) -> bool:
    """SQLite file of an earlier demo → whether it holds the demo user (False if unreadable)."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT 1 FROM users WHERE name = ?", (DEMO_USER,)).fetchone() \
                is not None
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def demo_login(engine: Engine, *, replacing: bool = False) -> DemoLogin:
    """Demo database → the `demo` editor with a fresh random password (an existing one replaced).

    `replacing`: the earlier demo's database, which held the user, was just recreated.
    """
    password = users.generate_password()
    if any(u["name"] == DEMO_USER for u in users.list_users(engine)):
        users.set_password(engine, DEMO_USER, password)
        return DemoLogin(name=DEMO_USER, password=password, replaced=True)
    users.add_user(engine, DEMO_USER, password, role="editor")
    return DemoLogin(name=DEMO_USER, password=password, replaced=replacing)


def shown_url(url: URL) -> str:
    """Database URL → the text to print: a relative SQLite path made absolute, no password."""
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=True)


def desk_command(db_url: str, theses_path: Path, *, port: int = 8000) -> str:
    """Database URL, theses file → the `evidence serve` command that opens the desk on them."""
    port_arg = f" --port {port}" if port != 8000 else ""
    return (f"evidence serve --db {shlex.quote(db_url)} "
            f"--theses {shlex.quote(str(theses_path))}{port_arg}")
