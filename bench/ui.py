"""Review desk server time at scale: queue page, item page, decision post.

Builds a database with N queued labels (default 10,000) over 3 theses (FNC-1 article bodies, one
article per thesis triple), signs an editor in, and times each request inside the server (an ASGI
wrapper around the app measures from request start to the last response byte; no network). The
baseline is the same requests against a 100-item database in the same run, so the ratios show how
the desk scales with the queue. Goal: p95 <= 100 ms at 10,000 items.

    .venv/bin/python bench/ui.py [--items 10000] [--n 100] [--db postgresql+psycopg://...]

Data is bulk-inserted (stage 5 through a backend would take minutes and measures nothing here).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from classifier import users  # noqa: E402
from classifier.config import load_theses  # noqa: E402
from classifier.store import connect, migrate, write  # noqa: E402
from classifier.store.tables import articles, feeds, labels, pairs, stories  # noqa: E402
from classifier.web import create_app  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
THESES = ("oss-parity", "eu-ai-act-delay", "ev-share-eu")
PASSWORD = "bench password 123"
FIELDS = [
    dict(relevant=True, evidence_type="direct", direction="supports", strength="strong"),
    dict(relevant=True, evidence_type="circumstantial", direction="undermines",
         strength="moderate"),
    dict(relevant=False, evidence_type=None, direction=None, strength=None),
    dict(relevant=True, evidence_type="circumstantial", direction="neutral", strength="weak"),
]


class Timed:
    """ASGI wrapper: server time per request path kind, start to final body chunk."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app, self.last_ms = app, 0.0

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()

        async def timed_send(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last_ms = (time.perf_counter() - t0) * 1000
            await send(message)

        await self.app(scope, receive, timed_send)


def build(db_url: str, n_items: int) -> None:
    """Database URL, N → N pending labels over 3 theses, 3 feeds, one story per article."""
    engine = connect(db_url)
    migrate(engine)
    with open(CORPORA / "fnc-1" / "train_bodies.csv", newline="", encoding="utf-8") as f:
        bodies = [r["articleBody"] for r in csv.DictReader(f) if len(r["articleBody"]) > 500]
    now = datetime.now(UTC)
    rng = random.Random(7)
    n_articles = (n_items + len(THESES) - 1) // len(THESES)
    with write(engine) as conn:
        feed_ids = [conn.execute(feeds.insert().values(
            name=f"feed-{i}", url=f"https://feed{i}.example.org/rss", tags=[], poll_minutes=60,
            enabled=True, consecutive_errors=0, error_count=0, created_at=now))
            .inserted_primary_key[0] for i in range(3)]
        conn.execute(stories.insert(),
                     [{"id": i + 1, "created_at": now} for i in range(n_articles)])
        arts = []
        for i in range(n_articles):
            body = bodies[i % len(bodies)]
            body_text = f"Report {i}.\n\n{body}"
            arts.append(dict(id=i + 1, url=f"https://n{i % 9}.example.org/{i}",
                             canonical_url=f"https://n{i % 9}.example.org/{i}",
                             title=body.split(".")[0][:120], site_name=f"n{i % 9}.example.org",
                             published=now - timedelta(minutes=7 * i), text=body_text,
                             text_sha256=hashlib.sha256(body_text.encode()).hexdigest(),
                             extracted_from="page", story_id=(i // 2) + 1,
                             feed_id=feed_ids[i % 3], created_at=now))
        conn.execute(articles.insert(), arts)
        prs, lbs = [], []
        for i in range(n_items):
            art, thesis = i // len(THESES) + 1, THESES[i % len(THESES)]
            f = dict(FIELDS[rng.randrange(len(FIELDS))])
            f["trigger"] = "above-85" if thesis == "oss-parity" and f["relevant"] and \
                rng.random() < 0.03 else None
            prs.append(dict(id=i + 1, article_id=art, thesis_id=thesis, state="labeled",
                            route_score=1.0, created_at=now, updated_at=now))
            quote = re.search(r"[^.\n]{20,200}\.", arts[art - 1]["text"])
            lbs.append(dict(id=i + 1, pair_id=i + 1, article_id=art, thesis_id=thesis,
                            cache_key=hashlib.sha256(f"{art}:{thesis}".encode()).hexdigest(),
                            **f, confidence=round(rng.uniform(0.4, 0.99), 2),
                            rationale="Bench proposal.", quotes=[quote.group(0)] if quote else [],
                            backend="scripted", model="scripted", prompt_hash="0" * 64,
                            schema_hash="0" * 64, thesis_hash="0" * 64, tokens_in=0,
                            tokens_out=0, cost_usd=0.0, latency_ms=0.0, attempts=1,
                            review_state="pending", version=1, created_at=now))
        conn.execute(pairs.insert(), prs)
        conn.execute(labels.insert(), lbs)
    users.add_user(engine, "bench", PASSWORD, role="editor")
    engine.dispose()


def pct(xs: list[float], p: float) -> float:
    """Samples, percentile → the nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def measure(db_url: str, n: int) -> dict[str, list[float]]:
    """Database URL, samples → server milliseconds per request kind."""
    engine = connect(db_url)
    app = create_app(engine, load_theses(ROOT / "theses.toml"))
    timed = Timed(app)
    out: dict[str, list[float]] = {"queue page": [], "queue page, filtered": [], "item page": [],
                                   "decision post": []}
    with TestClient(timed, base_url="http://127.0.0.1") as c:
        page = c.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token},
                   follow_redirects=False)
        assert r.status_code == 303, r.text
        for _ in range(3):  # warm up: imports, template compilation, connection pool
            c.get("/queue")
        for i in range(n):
            assert c.get("/queue").status_code == 200
            out["queue page"].append(timed.last_ms)
            assert c.get(f"/queue?thesis={THESES[i % 3]}&direction=supports").status_code == 200
            out["queue page, filtered"].append(timed.last_ms)
            r = c.get("/next", follow_redirects=False)
            assert r.status_code == 303 and "/item/" in r.headers["location"], r.headers
            item = c.get(r.headers["location"])
            assert item.status_code == 200
            out["item page"].append(timed.last_ms)
            form = re.search(r'id="approve-form">.*?name="csrf" value="([^"]+)".*?name="version" '
                             r'value="(\d+)"><input type="hidden" name="key" value="([^"]+)"',
                             item.text, re.S)
            action = re.search(r'action="(/item/\d+/decide)" id="approve-form"', item.text).group(1)
            d = c.post(action, data={"csrf": form.group(1), "action": "approve",
                                     "version": form.group(2), "key": form.group(3)},
                       follow_redirects=False)
            assert d.status_code == 303, d.text[:300]
            out["decision post"].append(timed.last_ms)
    engine.dispose()
    return out


def fresh_db(base: str | None, tmp: Path, name: str) -> str:
    """PostgreSQL base URL or None, temp dir → URL of a new empty database."""
    if not base:
        return f"sqlite:///{tmp / name}.db"
    db = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    return make_url(base).set(database=db).render_as_string(hide_password=False)


def drop_db(base: str | None, url: str) -> None:
    """PostgreSQL base URL, bench database URL → the bench database dropped (SQLite: no-op)."""
    if not base:
        return
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--baseline-items", type=int, default=100)
    ap.add_argument("--n", type=int, default=100, help="samples per request kind")
    ap.add_argument("--db", help="PostgreSQL server URL (a new database is created); "
                                 "default: SQLite in a temp dir")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, n_items in (("baseline", args.baseline_items), ("full", args.items)):
            url = fresh_db(args.db, Path(tmp), label)
            t0 = time.perf_counter()
            build(url, n_items)
            print(f"{label}: built {n_items:,} pending labels in {time.perf_counter() - t0:.1f} s "
                  f"({make_url(url).get_backend_name()})", flush=True)
            try:
                results[label] = measure(url, min(args.n, n_items // 2))
            finally:
                drop_db(args.db, url)
    print(f"\nserver time per request, ms (n={args.n}; baseline = {args.baseline_items} items)")
    print(f"{'request':24} {'p50':>8} {'p95':>8} {'max':>8} {'base p50':>9} {'base p95':>9} "
          f"{'p95 ratio':>9}  goal p95<=100ms")
    for kind in results["full"]:
        full, base = results["full"][kind], results["baseline"][kind]
        p95 = pct(full, 95)
        print(f"{kind:24} {statistics.median(full):8.1f} {p95:8.1f} {max(full):8.1f} "
              f"{statistics.median(base):9.1f} {pct(base, 95):9.1f} "
              f"{p95 / pct(base, 95):9.2f}  {'ok' if p95 <= 100 else 'MISSED'}")


if __name__ == "__main__":
    main()
