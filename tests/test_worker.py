"""`evidence worker` and `evidence status`: claims, leases, late writes, poison items, SIGTERM.

Runs on SQLite and, in the second CI pass, on PostgreSQL (the `engine` fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from classifier.backends import ScriptedBackend
from classifier.cli import main
from classifier.config import ThesesFile
from classifier.errors import LeaseLost
from classifier.store import utcnow, write
from classifier.store.tables import entries, feeds, labels, llm_calls, pairs, skips, workers
from classifier.worker import LabelStage, Worker, WorkerOptions, check_lease, claim, parse_stages
from tests.faultserver import FaultServer
from tests.label_fixtures import IRRELEVANT, THESIS, add_pair

ROOT = Path(__file__).resolve().parent.parent
THESES = ThesesFile(thesis=[THESIS])
FAST = WorkerOptions(lease_s=2.0, heartbeat_s=0.3, idle_s=0.05, stop_grace_s=5)


def _count(engine, table, *where) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table).where(*where)).scalar()


def test_worker_labels_the_backlog_once_and_leaves_no_claim(engine):
    ids = [add_pair(engine, n=i) for i in range(12)]
    backend = ScriptedBackend([IRRELEVANT] * 12)
    w = Worker(engine, [LabelStage(THESES, backend)], concurrency=3, options=FAST)
    counts = w.run(until_idle=True)
    assert counts["label:labeled"] == 12
    assert _count(engine, pairs, pairs.c.state == "labeled") == 12
    assert _count(engine, labels) == 12 and _count(engine, llm_calls) == 12
    assert _count(engine, pairs, pairs.c.claimed_by.is_not(None)) == 0
    with engine.connect() as c:
        assert sorted(c.execute(select(labels.c.pair_id)).scalars()) == ids
        row = c.execute(select(workers)).mappings().one()
    assert row["state"] == "stopped" and row["stages"] == ["label"] and row["concurrency"] == 3
    assert row["counts"]["label:labeled"] == 12


def test_claims_are_exclusive_and_an_expired_lease_is_reclaimed(engine):
    first, second = add_pair(engine, n=1), add_pair(engine, n=2)
    stage = LabelStage(THESES, ScriptedBackend())
    a = claim(engine, stage, "w-a", lease_s=30)
    b = claim(engine, stage, "w-b", lease_s=30)
    assert (a.item_id, b.item_id) == (first, second) and a.claims == 1
    assert claim(engine, stage, "w-c", lease_s=30) is None  # both held under live leases
    with write(engine) as conn:  # w-a stops heartbeating: its lease runs out
        conn.execute(update(pairs).where(pairs.c.id == first)
                     .values(lease_until=utcnow() - timedelta(seconds=1)))
    c = claim(engine, stage, "w-c", lease_s=30)
    assert c.item_id == first and c.claims == 2
    with pytest.raises(LeaseLost), write(engine) as conn:  # w-a's late commit is refused...
        check_lease(conn, stage=stage, c=a)
    with write(engine) as conn:  # ...while the new holder's goes through
        check_lease(conn, stage=stage, c=c)
    with engine.connect() as conn:
        assert conn.execute(select(pairs.c.claimed_by).where(pairs.c.id == first)).scalar() is None


def test_a_late_result_is_refused_and_the_new_holder_labels_once(engine):
    pid = add_pair(engine)
    slow = LabelStage(THESES, ScriptedBackend([IRRELEVANT]))
    late = claim(engine, slow, "w-slow", lease_s=0.2)
    time.sleep(0.3)  # w-slow is frozen past its lease; w-fast reclaims the pair
    fast = LabelStage(THESES, ScriptedBackend([IRRELEVANT]))
    now = claim(engine, fast, "w-fast", lease_s=30)
    assert now.item_id == pid
    with pytest.raises(LeaseLost):
        slow.work(engine, late, lambda conn: check_lease(conn, stage=slow, c=late))
    assert _count(engine, labels) == 0 and _count(engine, llm_calls) == 0  # nothing written
    assert fast.work(engine, now, lambda conn: check_lease(conn, stage=fast, c=now)) == "labeled"
    assert _count(engine, labels) == 1
    assert _count(engine, pairs, pairs.c.state == "labeled", pairs.c.claimed_by.is_(None)) == 1


def test_an_item_that_keeps_killing_workers_ends_failed(engine):
    pid = add_pair(engine)
    with write(engine) as conn:  # claimed 5 times already, never finished
        conn.execute(update(pairs).where(pairs.c.id == pid).values(claims=5))
    stage = LabelStage(THESES, ScriptedBackend())
    assert claim(engine, stage, "w", lease_s=30, max_claims=5) is None
    with engine.connect() as c:
        p = c.execute(select(pairs).where(pairs.c.id == pid)).mappings().one()
        s = c.execute(select(skips)).mappings().one()
    assert p["state"] == "failed" and p["error_type"] == "lease_expired"
    assert p["claimed_by"] is None
    assert (s["stage"], s["reason"], s["kind"]) == ("label", "lease_expired", "failure")


def test_backend_down_hands_the_item_back_without_counting_it(engine):
    pid = add_pair(engine)
    w = Worker(engine, [LabelStage(THESES, ScriptedBackend())], options=FAST)  # empty queue
    stage = w.stages[0]
    c = claim(engine, stage, w.worker_id, lease_s=30)
    w._backend_backoff.base = 0.01
    w._process(stage, c)
    assert w.counts["label:backend_unavailable"] == 1
    with engine.connect() as conn:
        p = conn.execute(select(pairs).where(pairs.c.id == pid)).mappings().one()
    assert p["state"] == "pending" and p["claimed_by"] is None and p["claims"] == 0


def test_parse_stages():
    assert parse_stages("label, fetch") == ["fetch", "label"]
    with pytest.raises(Exception, match="unknown stage"):
        parse_stages("fetch,scrape")


def test_status_reports_backlog_workers_and_failures(engine, db_url):
    failed = add_pair(engine, n=1)
    add_pair(engine, n=2)
    with write(engine) as conn:
        conn.execute(update(pairs).where(pairs.c.id == failed).values(claims=9))
    stage = LabelStage(THESES, ScriptedBackend())
    claim(engine, stage, "w", lease_s=30)  # the poison pair fails; the other is now in progress
    with write(engine) as conn:
        now = utcnow()
        conn.execute(insert(workers).values(id="host:1:abc", host="host", pid=1,
                                            stages=["label"], concurrency=2, state="running",
                                            started_at=now, heartbeat_at=now, counts={}))
        conn.execute(insert(workers).values(id="host:2:dead", host="host", pid=2,
                                            stages=["label"], concurrency=1, state="running",
                                            started_at=now - timedelta(hours=1),
                                            heartbeat_at=now - timedelta(hours=1), counts={}))
    res = CliRunner().invoke(main, ["status", "--json", "--db", db_url])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["stages"]["label"]["backlog"] == 1
    assert data["stages"]["label"]["in_progress"] == 1
    assert data["stages"]["label"]["oldest_pending_age_s"] >= 0
    assert [w["id"] for w in data["workers"]] == ["host:1:abc"]  # the silent one is not alive
    assert data["failures"] == {"label:lease_expired": 2}  # skips row + failed pair
    res = CliRunner().invoke(main, ["status", "--db", db_url])
    assert res.exit_code == 0 and "Workers alive: 1" in res.output


def test_sigterm_finishes_the_current_item_then_exits(engine, db_url, tmp_path):
    """A real `evidence worker` process: SIGTERM while it fetches a slow page."""
    with FaultServer() as server:
        now = utcnow()
        with write(engine) as conn:
            fid = conn.execute(insert(feeds).values(
                name="slow", url=server.url("/feed"), tags=[], poll_minutes=60, enabled=True,
                consecutive_errors=0, error_count=0, next_poll_at=now + timedelta(hours=1),
                created_at=now)).inserted_primary_key[0]
            for i in range(3):
                conn.execute(insert(entries).values(
                    feed_id=fid, guid=f"g{i}", link=server.url(f"/sleep?s=2&i={i}"),
                    title=f"t{i}", summary="", state="pending", created_at=now))
        cfg = tmp_path / "evidence.toml"
        cfg.write_text("[net]\nallow_private_networks = true\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "classifier", "worker", "--stages", "extract",
             "--concurrency", "1", "--lease", "30", "--db", db_url, "--config", str(cfg),
             "--theses", str(tmp_path / "none.toml"), "--feeds", str(tmp_path / "none.toml")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while server.in_flight == 0:  # the worker is inside its first page fetch
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM" in out
    with engine.connect() as c:
        states = sorted(c.execute(select(entries.c.state)).scalars())
        held = c.execute(select(func.count()).select_from(entries)
                         .where(entries.c.claimed_by.is_not(None))).scalar()
        w = c.execute(select(workers)).mappings().one()
    assert states == ["pending", "pending", "skipped"]  # finished the one it had, took no more
    assert held == 0
    assert w["state"] == "stopped" and w["stopped_at"] is not None
    assert w["counts"].get("extract:skipped") == 1


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_stop_releases_a_claim_whose_work_overruns_the_grace_period(engine):
    pid = add_pair(engine)

    class Stuck(LabelStage):
        def work(self, engine_, claim_, guard):
            time.sleep(1.5)  # longer than the grace period below
            return super().work(engine_, claim_, guard)

    stage = Stuck(THESES, ScriptedBackend([IRRELEVANT]))
    w = Worker(engine, [stage], options=WorkerOptions(lease_s=30, heartbeat_s=0.2, idle_s=0.05,
                                                      stop_grace_s=0.2))
    import threading
    t = threading.Thread(target=w.run)
    t.start()
    deadline = time.monotonic() + 10
    while _count(engine, pairs, pairs.c.claimed_by.is_not(None)) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    w.stop()
    t.join(10)
    assert w.counts["label:released"] == 1
    time.sleep(1.6)  # the overrunning thread finishes; its late result is refused
    assert w.counts["label:lease_lost"] == 1
    assert _count(engine, labels) == 0
    with engine.connect() as c:
        p = c.execute(select(pairs).where(pairs.c.id == pid)).mappings().one()
    assert p["state"] == "pending" and p["claimed_by"] is None and p["claims"] == 0
