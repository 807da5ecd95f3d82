"""Load faults (issue 7): 2 and 4 workers on one PostgreSQL over a stream of 2,000 articles, and
one polling cycle over 1,000 feeds on local servers with mixed faults."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, insert, select, update

from classifier.config import FeedConfig, FeedsFile, NetSettings, Settings
from classifier.fetch import sync_feeds
from classifier.net import Client
from classifier.store import utcnow, write
from classifier.store.engine import as_utc
from classifier.store.tables import entries, feeds, skips
from classifier.worker import FetchStage, Worker, WorkerOptions
from tests.worker_fixtures import (
    FINAL_ENTRY,
    Children,
    bodies,
    end_state,
    fork_worker,
    rss,
    shared_router,
    wait,
    worker_counts,
)

needs_pg = pytest.mark.skipif(not os.environ.get("EVIDENCE_TEST_DB"),
                              reason="needs PostgreSQL: EVIDENCE_TEST_DB (scripts/test.sh sets it)")
STREAM = 2000


@pytest.fixture(scope="module")
def router():  # type: ignore[no-untyped-def]
    """The real routing model, loaded once; forked workers inherit it."""
    return shared_router()


def _all_final(engine, n: int) -> bool:  # type: ignore[no-untyped-def]
    s = end_state(engine)
    return (sum(s["entries"].values()) == n and set(s["entries"]) <= FINAL_ENTRY
            and sum(s["pairs"].values()) == s["articles"] and not s["pairs"].get("pending"))


@pytest.mark.postgres
@needs_pg
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("n_workers", [2, 4])
def test_workers_on_one_postgres_stream_of_2000_articles(engine, db_url, router, n_workers):
    """2,000 entries arrive in 10 batches while N worker processes (2 threads each) extract,
    dedupe, route and label them: every article stored once, labeled once, by one LLM call."""
    texts = bodies()[:STREAM]
    assert len(texts) == STREAM
    now = utcnow()
    with write(engine) as conn:
        fid = conn.execute(insert(feeds).values(
            name="wire", url="https://wire.example/rss", tags=[], poll_minutes=60, enabled=True,
            consecutive_errors=0, error_count=0, next_poll_at=now + timedelta(days=1),
            created_at=now)).inserted_primary_key[0]
    opts = WorkerOptions(lease_s=10.0, heartbeat_s=1.0, idle_s=0.05)
    started = time.monotonic()
    with Children() as children:
        pids = []
        for _ in range(n_workers):
            pid, fd = fork_worker(children, db_url=db_url, names=["extract", "label"],
                                  options=opts, concurrency=2, latency_s=0.0, router=router)
            os.close(fd)
            pids.append(pid)
        for b in range(10):  # the stream: a batch of 200 new entries every 0.3 s
            batch = texts[b * 200:(b + 1) * 200]
            with write(engine) as conn:
                conn.execute(insert(entries), [
                    {"feed_id": fid, "guid": f"wire-{b}-{i}", "link": None, "title": title,
                     "summary": body, "state": "pending", "created_at": utcnow()}
                    for i, (title, body) in enumerate(batch)])
            time.sleep(0.3)
        deadline = time.monotonic() + 900
        while not _all_final(engine, STREAM):
            assert time.monotonic() < deadline, end_state(engine)
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        for pid in pids:
            assert wait(pid, 60) == 0
    s = end_state(engine)
    counts = worker_counts(engine)
    print(f"\n{n_workers} workers: {STREAM} entries in {elapsed:.1f}s; {s}\n{counts}")
    assert s["entries"] == {"done": STREAM}  # zero losses
    assert s["articles"] == STREAM and s["pairs"] == {"labeled": STREAM}
    assert s["labels"] == s["llm_calls"] == STREAM  # zero duplicates, not even a wasted call
    assert s["pairs_with_2_labels"] == s["articles_with_2_labels"] == 0
    assert s["claimed"] == 0 and s["workers"] == {"stopped": n_workers}
    assert counts["extract:done"] == STREAM and counts["label:labeled"] == STREAM
    assert not any(k.endswith(("lease_lost", "duplicate_refused", "error")) for k in counts)
    # the work was shared: every worker did part of it
    with engine.connect() as c:
        from classifier.store.tables import workers
        per_worker = [r["label:labeled"] for (r,) in c.execute(select(workers.c.counts))]
    assert len(per_worker) == n_workers and min(per_worker) > 0


# ---------------------------------------------------------------------------------------------
# 1,000 feeds, mixed faults, one polling cycle
# ---------------------------------------------------------------------------------------------

HOSTS = [f"127.0.0.{i}" for i in range(1, 9)]
KINDS = {"ok": 530, "notmod": 100, "slow": 100, "err": 70, "dying": 30, "trunc": 50, "html": 50,
         "gone": 50, "redirect": 20}
SLOW_S = 0.3


class FeedFarm:
    """Eight HTTP servers on 127.0.0.1-8 serving /f/<kind>/<i>.xml; counts requests per path and
    requests in flight per host (the client's per-host limit is what is tested)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.peak_total = 0
        farm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                farm.serve(self)

        self.servers = [ThreadingHTTPServer((h, 0), Handler) for h in HOSTS]
        for s in self.servers:
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def url(self, i: int, kind: str) -> str:
        s = self.servers[i % len(self.servers)]
        host, port = s.server_address[:2]
        return f"http://{host}:{port}/f/{kind}/{i}.xml"

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        host = h.headers.get("Host", "")
        with self.lock:
            self.hits[h.path] += 1
            self.in_flight[host] += 1
            self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
            self.peak_total = max(self.peak_total, sum(self.in_flight.values()))
        try:
            self._answer(h)
        finally:
            with self.lock:
                self.in_flight[host] -= 1

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        _, _, kind, name = h.path.split("/")
        i = int(name.split(".")[0])
        body = rss([(f"{i}-{k}", f"https://news.example/{i}/{k}", f"Story {k} of feed {i}")
                    for k in range(2)]).encode()
        status, headers = 200, {"Content-Type": "application/rss+xml", "ETag": f'"v{i}"'}
        if kind == "notmod" and h.headers.get("If-None-Match") == f'"v{i}"':
            status, body = 304, b""
        elif kind == "slow":
            time.sleep(SLOW_S)
        elif kind in ("err", "dying"):
            status, body = 500, b"internal error"
        elif kind == "trunc":
            body = body[: len(body) // 2]  # cut mid-document: malformed XML
        elif kind == "html":
            headers["Content-Type"] = "text/html"
            body = b"<html><body><h1>Our new website</h1><p>No feed here.</p></body></html>"
        elif kind == "gone":
            status, body = 410, b"gone"
        elif kind == "redirect":
            status, body = 301, b""
            headers["Location"] = f"/f/ok/{i}.xml"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body:
            h.wfile.write(body)


def test_one_polling_cycle_over_1000_feeds_with_mixed_faults(engine):
    """1,000 feeds on 8 local hosts: ok, 304, slow, 500, malformed, not a feed, 410, redirect.
    One worker with 16 threads polls each feed exactly once, never more than 2 connections per
    host; failing feeds are backed off, 410s and feeds at their 10th error disabled."""
    farm = FeedFarm()
    try:
        plan = [kind for kind, n in KINDS.items() for _ in range(n)]
        assert len(plan) == 1000
        rows = [(f"feed-{i:04d}", kind, farm.url(i, kind)) for i, kind in enumerate(plan)]
        sync_feeds(engine, FeedsFile(feed=[FeedConfig(name=n, url=u) for n, _, u in rows]))
        with write(engine) as conn:  # history: 304 feeds polled before, dying feeds at 9 errors
            for n, kind, _ in rows:
                if kind == "notmod":
                    i = int(n.split("-")[1])
                    conn.execute(update(feeds).where(feeds.c.name == n).values(etag=f'"v{i}"'))
                elif kind == "dying":
                    conn.execute(update(feeds).where(feeds.c.name == n)
                                 .values(consecutive_errors=9, error_count=9))
        settings = Settings(net=NetSettings(allow_private_networks=True, per_host_connections=2,
                                            deadline_s=10.0))
        started, t0 = utcnow(), time.monotonic()
        with Client(settings.net) as client:
            w = Worker(engine, [FetchStage(settings, client)], concurrency=16,
                       options=WorkerOptions(lease_s=30, heartbeat_s=2, idle_s=0.05))
            counts = w.run(until_idle=True)
        elapsed = time.monotonic() - t0
    finally:
        farm.close()
    print(f"\n1000 feeds polled in {elapsed:.1f}s; worker counts {counts}; "
          f"max in flight per host {dict(farm.max_in_flight)}, peak total {farm.peak_total}")
    kind_of = {n: k for n, k, _ in rows}
    with engine.connect() as c:
        fr = {r["name"]: r for r in c.execute(select(feeds)).mappings()}
        reasons = Counter(c.execute(select(skips.c.reason).where(skips.c.stage == "fetch"))
                          .scalars())
        n_entries = c.execute(select(func.count()).select_from(entries)).scalar()
    # one cycle: every feed polled, each URL fetched exactly once (plus each redirect's target)
    assert all(r["last_polled_at"] is not None for r in fr.values())
    for _, _, url in rows:
        assert farm.hits["/" + url.split("/", 3)[3]] == 1, url
    assert sum(farm.hits.values()) == 1000 + KINDS["redirect"]
    assert sum(counts.get(k, 0) for k in counts if k.startswith("fetch:")) == 1000
    # the per-host connection limit held, and the cycle did run in parallel
    assert max(farm.max_in_flight.values()) <= 2
    assert farm.peak_total > 2
    later = started + timedelta(minutes=59)
    for n, r in fr.items():
        kind = kind_of[n]
        nxt = as_utc(r["next_poll_at"])
        if kind in ("ok", "slow", "redirect", "notmod"):
            assert r["consecutive_errors"] == 0 and r["disabled_reason"] is None, (n, dict(r))
            assert r["last_status"] == (304 if kind == "notmod" else 200)
            assert nxt > later  # next poll at its normal interval (60 min)
        elif kind in ("err", "trunc", "html"):
            if kind == "trunc" and r["consecutive_errors"] == 0:
                continue  # feedparser salvaged entries from the cut document: recorded below
            assert r["consecutive_errors"] == 1 and r["disabled_reason"] is None, (n, dict(r))
            assert started < nxt < later  # backed off: retried sooner than a healthy poll
            assert r["last_error"]
        elif kind == "dying":
            assert r["consecutive_errors"] == 10 and "10 consecutive failures" in \
                r["disabled_reason"] and nxt is None
        elif kind == "gone":
            assert "410" in r["disabled_reason"] and nxt is None
    assert reasons["http_500"] == KINDS["err"] + KINDS["dying"]
    assert reasons["http_410"] == KINDS["gone"]
    assert reasons["not_a_feed"] >= KINDS["html"]
    assert reasons["not_a_feed"] + reasons["malformed_feed"] >= KINDS["html"] + KINDS["trunc"]
    assert n_entries >= 2 * (KINDS["ok"] + KINDS["slow"] + KINDS["redirect"])
