"""Fault tests for workers (issue 7), on SQLite and, in the second CI pass, on PostgreSQL.

Worker processes are forked from the test (after the routing model is loaded once, so a
replacement starts in milliseconds) and killed with a real SIGKILL / SIGSTOP. The site they
ingest is served on 127.0.0.1 from real article bodies; a scripted backend with a fixed latency
stands in for the model. Every test ends by checking the same invariants (`end_state`): every
entry and every (article, thesis) pair in exactly one final state, no duplicate label, no claim
left behind.
"""

from __future__ import annotations

import os
import random
import select as io_select
import signal
import tempfile
import threading
import time

import pytest
from sqlalchemy import func, select

from classifier import queue
from classifier.config import ThesesFile
from classifier.net import Client
from classifier.route import Router
from classifier.store import connect, migrate
from classifier.store.tables import decisions, labels, pairs, workers
from classifier.worker import WorkerOptions
from scripts.pgcluster import Cluster, wait_ready
from tests.faultserver import FaultServer
from tests.label_fixtures import add_pair
from tests.worker_fixtures import (
    FINAL_ENTRY,
    FINAL_PAIR,
    SETTINGS,
    THESES,
    Children,
    bodies,
    end_state,
    feeds_file_for,
    fork_worker,
    page,
    rss,
    shared_router,
    wait,
    worker_counts,
)

KILLS = 200
THREE = ThesesFile(thesis=[THESES.thesis[0].model_copy(update={"id": i})
                           for i in ("oss-parity", "oss-parity-b", "oss-parity-c")])
needs_pg = pytest.mark.skipif(not os.environ.get("EVIDENCE_TEST_DB"),
                              reason="needs PostgreSQL: EVIDENCE_TEST_DB (scripts/test.sh sets it)")


@pytest.fixture(scope="module")
def router() -> Router:
    """The real routing model, loaded once in the test process; forked workers inherit it."""
    return shared_router()


def serve_site(server: FaultServer, n_articles: int, n_feeds: int) -> list[tuple[str, str]]:
    """Pages and feeds on the fault server → (feed name, url) rows. Besides n_articles pages:
    one page syndicated in two feeds (a duplicate), one 404 link, one not-HTML link."""
    items: list[list[tuple[str, str, str]]] = [[] for _ in range(n_feeds)]
    for i, (title, body) in enumerate(bodies()[:n_articles]):
        server.add(f"/a/{i}.html", page(title, body), content_type="text/html; charset=utf-8")
        items[i % n_feeds].append((f"a{i}", server.url(f"/a/{i}.html"), title))
    items[-1].append(("dup0", server.url("/a/0.html?utm_source=rss"), "Syndicated copy"))
    items[0].append(("missing", server.url("/a/missing.html"), "A page that is gone"))
    items[0].append(("text", server.url("/sleep?s=0"), "Not a page"))
    rows = []
    for k, its in enumerate(items):
        server.add(f"/feed/{k}.xml", rss(its), etag=f'"f{k}"')
        rows.append((f"feed-{k}", server.url(f"/feed/{k}.xml")))
    return rows


class Live:
    """A forked worker and what it has reported through its pipe."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd, self.started, self.done, self.calls = pid, fd, False, 0, 0
        os.set_blocking(fd, False)

    def poll(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        self.started = self.started or b"s" in data
        self.done += data.count(b"d")
        self.calls += data.count(b"c")


@pytest.mark.timeout(1200)
def test_kill_9_two_hundred_times_loses_and_duplicates_nothing(engine, db_url, router):
    """200 SIGKILLs at random points of a fetch → extract → route → label run (2 workers of 2
    threads, lease 2 s, label latency 25 ms); then one worker finishes the rest.

    Kill points: a victim is drawn at random and killed 0-30 ms after its next finished item
    or its next model call starts (of 6 feeds, 123 entries and 360 pairs: 3 theses), or at once
    when the run is ahead of the kills, so that the 200 kills spread over the whole run and land
    in start-up, claims, page fetches, extraction, routing, model calls and commits alike (its
    other thread is mid-item), on a fast or a loaded machine. An item whose workers keep dying
    under it ends 'failed' (lease_expired) after 12 claims: a final state, counted below."""
    n_articles = 120
    rnd = random.Random(7)
    opts = WorkerOptions(lease_s=2.0, heartbeat_s=0.3, idle_s=0.05, max_claims=12)
    names = ["fetch", "extract", "label"]
    with FaultServer() as server, Client(SETTINGS.net) as client, Children() as children:
        feeds_file = feeds_file_for(serve_site(server, n_articles, n_feeds=6))

        def spawn(until_idle: bool = False) -> Live:
            return Live(*fork_worker(children, db_url=db_url, names=names, options=opts,
                                     concurrency=2, until_idle=until_idle, latency_s=0.025,
                                     invalid_every=25, feeds_file=feeds_file, router=router,
                                     client=client, theses=THREE, notify_calls=True))

        live, dead = [spawn(), spawn()], []
        kills, started, mid, finished_by_dead = 0, time.monotonic(), None, 0
        items = 6 + n_articles + 3 + 3 * n_articles  # feeds, entries, pairs
        while kills < KILLS:
            victim = rnd.choice(live)
            for w in live:
                w.poll()
            # Keep the kills spread over the run: when the run is ahead of the kills, kill at
            # once (start-up, a claim, whatever it is doing); otherwise 0-30 ms after its next
            # finished item or its next model call starts.
            ahead = (finished_by_dead + sum(w.done for w in live)) / items >= kills / KILLS
            event = "started" if ahead else rnd.choice(("done", "calls"))
            goal = 1 if ahead else getattr(victim, event) + 1
            deadline = time.monotonic() + 5
            while (not victim.started or getattr(victim, event) < goal) \
                    and time.monotonic() < deadline:
                io_select.select([victim.fd], [], [], 0.05)
                victim.poll()
            time.sleep(rnd.uniform(0.0, 0.03))
            os.kill(victim.pid, signal.SIGKILL)
            victim.poll()
            finished_by_dead += victim.done
            os.close(victim.fd)
            kills += 1
            live.remove(victim)
            dead.append(victim.pid)
            live.append(spawn())
            dead = [p for p in dead if os.waitpid(p, os.WNOHANG) == (0, 0)]
            if kills == KILLS // 2:
                mid = end_state(engine)
        kill_phase = time.monotonic() - started
        for p in dead:
            os.waitpid(p, 0)
        for w in live:  # graceful stop of the survivors, then one worker drains the rest
            os.kill(w.pid, signal.SIGTERM)
            os.close(w.fd)
        for w in live:
            assert wait(w.pid, 60) == 0
        last = spawn(until_idle=True)
        os.close(last.fd)
        assert wait(last.pid, 300) == 0

    s = end_state(engine)
    print(f"\nkill phase {kill_phase:.1f}s, {kills} kills; state at kill {KILLS // 2}: {mid}\n"
          f"end: {s}\nworker counts: {worker_counts(engine)}")
    assert kills == KILLS
    assert set(s["entries"]) <= FINAL_ENTRY  # nothing left pending
    assert sum(s["entries"].values()) == n_articles + 3  # every feed item became one entry
    # every page is one article, or (rarely) an entry given up after 12 claims
    poisoned = {st: n for st, n in s["lease_expired"].items() if n}
    assert s["entries"]["done"] == s["articles"] == n_articles - poisoned.get("extract", 0)
    assert sum(poisoned.values()) <= n_articles // 20, poisoned
    assert set(s["pairs"]) <= FINAL_PAIR and sum(s["pairs"].values()) == 3 * s["articles"]
    assert s["pairs"].get("labeled", 0) == s["labels"]
    assert s["pairs_with_2_labels"] == s["articles_with_2_labels"] == 0
    assert s["labeled_pairs_without_label"] == s["articles_without_pair"] == 0
    assert s["done_entries_without_article"] == 0
    assert s["claimed"] == 0 and s["feeds_unpolled"] == 0
    # the kills interrupted real work: items were claimed again after their worker died, and
    # halfway through the kills the run was under way but not finished
    assert s["reclaims"] >= 20
    assert mid is not None and 0 < sum(mid["entries"].values())
    assert mid["entries"].get("pending", 0) + mid["pairs"].get("pending", 0) > 0
    with engine.connect() as c:
        killed = c.execute(select(func.count()).select_from(workers)
                           .where(workers.c.state != "stopped")).scalar()
    assert killed == KILLS  # every kill hit a registered worker


def _worker_row(engine, pid: int):  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return c.execute(select(workers).where(workers.c.pid == pid)).mappings().first()


def _wait_for(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigstop_past_the_lease_loses_the_claim_and_the_late_write_is_refused(engine, db_url):
    """Worker A claims a pair and is frozen (SIGSTOP) mid-call, past its 1 s lease; worker B
    takes the pair over and labels it; A is thawed, finishes its call and is refused."""
    pair_id = add_pair(engine)
    opts = WorkerOptions(lease_s=1.0, heartbeat_s=0.2, idle_s=0.05)
    with Children() as children:
        a, fd = fork_worker(children, db_url=db_url, names=["label"], options=opts,
                            concurrency=1, latency_s=1.5, notify_calls=True)
        got = b""
        while b"c" not in got:  # A has claimed the pair and is inside the model call
            assert io_select.select([fd], [], [], 60)[0], "worker A never called the model"
            got += os.read(fd, 64)
        os.close(fd)
        a_id = _worker_row(engine, a)["id"]
        assert _claimed_by(engine, pair_id) == a_id
        os.kill(a, signal.SIGSTOP)
        frozen_at = time.monotonic()
        b, fd = fork_worker(children, db_url=db_url, names=["label"], options=opts,
                            concurrency=1, latency_s=0.0)
        os.close(fd)
        _wait_for(lambda: _pair_state(engine, pair_id) == "labeled", 60, "B's label")
        # B could only claim once A's lease ran out: at most one heartbeat before the freeze
        # plus the lease
        assert time.monotonic() - frozen_at > opts.lease_s - opts.heartbeat
        os.kill(a, signal.SIGCONT)  # A's call returns; its commit must be refused
        _wait_for(lambda: (_worker_row(engine, a)["counts"] or {}).get("label:lease_lost"),
                  30, "A's refused commit")
        for pid in (a, b):
            os.kill(pid, signal.SIGTERM)
            assert wait(pid, 30) == 0
    ra, rb = _worker_row(engine, a), _worker_row(engine, b)
    assert ra["counts"].get("label:lease_lost") == 1 and "label:labeled" not in ra["counts"]
    assert rb["counts"].get("label:labeled") == 1
    s = end_state(engine)
    assert s["labels"] == 1 and s["llm_calls"] == 1  # B's call only: A wrote nothing at all
    assert s["pairs"] == {"labeled": 1} and s["claimed"] == 0


def _claimed_by(engine, pair_id: int):  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return c.execute(select(pairs.c.claimed_by).where(pairs.c.id == pair_id)).scalar()


def _pair_state(engine, pair_id: int):  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return c.execute(select(pairs.c.state).where(pairs.c.id == pair_id)).scalar()


@pytest.mark.skipif(bool(os.environ.get("EVIDENCE_TEST_DB")),
                    reason="SQLite-only; runs in the SQLite pass of scripts/test.sh")
def test_sqlite_worker_and_review_desk_write_at_once_without_locked_errors(tmp_path):
    """Always SQLite (whatever EVIDENCE_TEST_DB says): two worker processes of two threads label
    300 pairs while three editors approve labels as they appear through the review queue's own
    functions. Not one "database is locked", every label decided exactly once."""
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    engine = connect(url)
    migrate(engine)
    n = 300
    for i in range(n):
        add_pair(engine, n=i)
    opts = WorkerOptions(lease_s=5.0, heartbeat_s=0.5, idle_s=0.05)
    errors: list[str] = []
    decided: list[int] = []

    def editor(name: str) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 5:
            try:
                lid = queue.claim_next(engine, name)
                if lid is None:
                    time.sleep(0.01)
                    continue
                idle_since = time.monotonic()
                with engine.connect() as c:
                    version = queue.get_item(c, lid).version
                queue.decide(engine, lid, user=name, action="approve", version=version)
                decided.append(lid)
            except Exception as e:  # noqa: BLE001 - counted and asserted on below
                errors.append(f"{name}: {type(e).__name__}: {e}")

    with Children() as children:
        pids = []
        for _ in range(2):
            pid, fd = fork_worker(children, db_url=url, names=["label"], options=opts,
                                  concurrency=2, until_idle=True, latency_s=0.005)
            os.close(fd)
            pids.append(pid)
        editors = [threading.Thread(target=editor, args=(f"editor{i}",)) for i in range(3)]
        for t in editors:
            t.start()
        for pid in pids:
            assert wait(pid, 300) == 0
        for t in editors:
            t.join(120)
    counts = worker_counts(engine)
    s = end_state(engine)
    assert errors == []
    assert counts.get("sqlite_locked", 0) == 0 and counts.get("db_errors", 0) == 0
    assert s["pairs"] == {"labeled": n} and s["labels"] == n and s["claimed"] == 0
    assert sorted(decided) == sorted(set(decided)) and len(decided) == n
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(decisions)).scalar() == n
        assert c.execute(select(func.count()).select_from(labels)
                         .where(labels.c.review_state == "approved")).scalar() == n
    engine.dispose()


@pytest.mark.postgres
@needs_pg
def test_postgres_stopped_and_restarted_mid_run_workers_reconnect_and_finish(tmp_path):
    """A private PostgreSQL cluster is stopped (immediate: like a crash) while two workers label
    300 pairs, kept down for 3 s, and started again: the workers back off, reconnect and finish."""
    base = tempfile.mkdtemp(prefix="evidence-pgrestart-")  # not under root-only tmp_path
    cluster = Cluster(base, durable=True)  # an acknowledged commit survives the crash
    try:
        url = cluster.start()
        engine = connect(url)
        migrate(engine)
        n = 300
        for i in range(n):
            add_pair(engine, n=i)
        opts = WorkerOptions(lease_s=2.0, heartbeat_s=0.3, idle_s=0.05, backoff_max_s=2.0)
        with Children() as children:
            pids = []
            for _ in range(2):
                pid, fd = fork_worker(children, db_url=url, names=["label"], options=opts,
                                      concurrency=2, until_idle=True, latency_s=0.01)
                os.close(fd)
                pids.append(pid)
            _wait_for(lambda: end_state(engine)["labels"] >= 40, 120, "some labels")
            engine.dispose()
            cluster.stop("immediate")
            time.sleep(3)
            cluster.start()
            wait_ready(url)
            for pid in pids:
                assert wait(pid, 300) == 0
        s = end_state(engine)
        counts = worker_counts(engine)
        print(f"\nafter restart: {s}\nworker counts: {counts}")
        assert counts.get("db_errors", 0) > 0  # they did see the database go away
        assert s["pairs"] == {"labeled": n} and s["labels"] == n
        assert s["pairs_with_2_labels"] == 0 and s["claimed"] == 0
        assert s["workers"] == {"stopped": 2}
        engine.dispose()
    finally:
        cluster.destroy()
