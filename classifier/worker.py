"""`evidence worker`: a long-running process that claims due work from the shared store.

    loop (per thread):  claim ONE due item ─▶ stage.work(item) (slow: HTTP, LLM; no transaction)
                        ─▶ write txn: lease still ours? ─▶ stage's store function ─▶ commit
    heartbeat thread:   every lease/3: extend our live leases, refresh workers.heartbeat_at

Work items and their "due" rows (stages in `STAGES`), each done by its module's one-item
functions (fetch.fetch_feed/store_poll, pipeline.work_entry/store_entry + route.route_article,
label.label_pair):
    fetch    feeds    enabled, not disabled, next_poll_at passed (or never polled)
    extract  entries  state 'pending' (page, extract, dedupe; then route the new article)
    label    pairs    state 'pending' (for a thesis this worker knows)

A claim is `claimed_by = <worker id>, lease_until = now + lease`, taken with
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (two workers never wait on or take the same
row) and inside `BEGIN IMMEDIATE` on SQLite (one writer at a time). A lease that is not renewed
expires and the item is claimed again by anyone. The result is committed only if, in the same
transaction, `UPDATE ... WHERE claimed_by = me AND lease_until > now` still matches: a worker
that was frozen or cut off past its lease gets `LeaseLost` and its late result is dropped. The
unique constraints (labels.cache_key, articles.canonical_url/text_sha256, pairs(article,
thesis), entries(feed, guid)) make a second result for the same work impossible regardless.

Every claim bumps a `claims` counter (entries, pairs); an item claimed `max_claims` times
without finishing (it keeps killing its workers) ends 'failed' with error type `lease_expired`.
A database that goes away (restart, network) is retried with capped exponential backoff;
SQLAlchemy's pre-ping replaces the dead pooled connections once it is back.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table, and_, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from classifier.config import FeedsFile, LabelSettings, Settings, ThesesFile
from classifier.errors import BackendUnavailable, LeaseLost
from classifier.net import Client
from classifier.store import utcnow, write
from classifier.store.tables import workers

log = logging.getLogger("classifier.worker")

STAGES = ("fetch", "extract", "label")
DB_DOWN = (OperationalError, InterfaceError)

#: The lease check a stage runs first in its storing transaction (raises LeaseLost).
Guard = Callable[[Connection], None]


@dataclass(frozen=True)
class Claim:
    """One item held by this worker until `lease_until`."""

    stage: str
    item_id: int
    worker_id: str
    lease_until: datetime
    claims: int


class Stage(Protocol):
    """A pipeline stage as the worker drives it: which rows are due, and how to do one."""

    name: str
    table: Table

    def due(self) -> Any:
        """→ SQL condition for rows that need this stage (lease not considered)."""

    def work(self, engine: Engine, claim: Claim, guard: Guard) -> str:
        """Claimed item → done and stored (slow part outside any transaction; `guard(conn)` first
        in the storing transaction) → outcome name ("labeled", "skipped", ...)."""

    def give_up(self, conn: Connection, item_id: int, claims: int) -> None:
        """Store the item as failed after `claims` claims that never finished."""

    def sweep(self, engine: Engine) -> int:
        """Catch-up work with no claim of its own (routing articles a crash left unrouted) → count."""


@dataclass
class WorkerOptions:
    """Timing knobs; defaults suit production, tests shorten them."""

    lease_s: float = 60.0
    heartbeat_s: float | None = None  # default lease_s / 3
    idle_s: float = 2.0  # sleep when nothing is due
    max_claims: int = 5
    stop_grace_s: float = 30.0  # SIGTERM: time to finish the current item before releasing it
    backoff_max_s: float = 30.0
    sweep_every_s: float = 30.0  # catch-up sweeps (unrouted articles) when idle, at most this often

    @property
    def heartbeat(self) -> float:
        return self.heartbeat_s or self.lease_s / 3


def new_worker_id() -> str:
    """→ a worker id unique across machines: host:pid:random."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_db_down(exc: BaseException) -> bool:
    """Exception → whether it means the database is unreachable (retry later, not a bug)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, DB_DOWN) and not isinstance(exc, IntegrityError)


class Backoff:
    """Capped exponential backoff with jitter: 0.25 s, 0.5 s, 1 s, ... up to `cap`."""

    def __init__(self, cap: float = 30.0, base: float = 0.25) -> None:
        self.cap, self.base, self.tries = cap, base, 0

    def next(self) -> float:
        """→ seconds to wait before the next try."""
        delay = min(self.cap, self.base * 2 ** self.tries)
        self.tries += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.tries = 0


# ---------------------------------------------------------------------------------------------
# Claims and leases (one item at a time)
# ---------------------------------------------------------------------------------------------


def _lease_free(t: Table, now: datetime) -> Any:
    return or_(t.c.lease_until.is_(None), t.c.lease_until < now)


def claim(engine: Engine, stage: Stage, worker_id: str, *, lease_s: float,
          max_claims: int = 5) -> Claim | None:
    """Stage → the next due, unleased item now leased to `worker_id`, or None when none is free."""
    t = stage.table
    now = utcnow()
    has_claims = "claims" in t.c
    with write(engine) as conn:
        cols = [t.c.id] + ([t.c.claims] if has_claims else [])
        q = (select(*cols).where(stage.due(), _lease_free(t, now)).order_by(t.c.id).limit(1)
             .with_for_update(skip_locked=True))  # SQLite: no-op; BEGIN IMMEDIATE serialises
        while True:
            row = conn.execute(q).first()
            if row is None:
                return None
            claims = (row.claims or 0) if has_claims else 0
            if has_claims and claims >= max_claims:
                # Claimed max_claims times and never finished: it kills its workers. Stop here.
                stage.give_up(conn, row.id, claims)
                conn.execute(update(t).where(t.c.id == row.id)
                             .values(claimed_by=None, lease_until=None))
                log.warning("%s item %s failed after %d claims", stage.name, row.id, claims)
                continue
            until = now + timedelta(seconds=lease_s)
            values: dict[str, Any] = {"claimed_by": worker_id, "lease_until": until}
            if has_claims:
                values["claims"] = t.c.claims + 1
            conn.execute(update(t).where(t.c.id == row.id).values(**values))
            return Claim(stage.name, row.id, worker_id, until, claims + 1)


def check_lease(conn: Connection, *, stage: Stage, c: Claim) -> None:
    """Inside the commit transaction: end the lease if it is still ours and live, else LeaseLost.

    The UPDATE's WHERE is the check, so on PostgreSQL it also locks the row until commit: a
    reclaimer either sees our finished result or we see its claim, never both writing."""
    t = stage.table
    res = conn.execute(update(t).where(t.c.id == c.item_id, t.c.claimed_by == c.worker_id,
                                       t.c.lease_until > utcnow())
                       .values(claimed_by=None, lease_until=None))
    if res.rowcount != 1:
        raise LeaseLost(f"{c.stage} item {c.item_id}: lease of {c.worker_id} expired or taken")


def release(engine: Engine, stage: Stage, c: Claim) -> bool:
    """Give a claim back unfinished (graceful stop, unexpected error); → whether it was ours."""
    t = stage.table
    values: dict[str, Any] = {"claimed_by": None, "lease_until": None}
    if "claims" in t.c:
        values["claims"] = t.c.claims - 1  # a voluntary release does not count toward poison
    with write(engine) as conn:
        res = conn.execute(update(t).where(t.c.id == c.item_id, t.c.claimed_by == c.worker_id)
                           .values(**values))
    return res.rowcount == 1


def extend_leases(engine: Engine, stages: Sequence[Stage], worker_id: str, lease_s: float) -> int:
    """Renew every live lease `worker_id` holds; an already expired one stays lost. → rows renewed."""
    now = utcnow()
    n = 0
    with write(engine) as conn:
        for st in stages:
            t = st.table
            n += conn.execute(update(t).where(t.c.claimed_by == worker_id, t.c.lease_until > now)
                              .values(lease_until=now + timedelta(seconds=lease_s))).rowcount
    return n


# ---------------------------------------------------------------------------------------------
# The registry (workers table)
# ---------------------------------------------------------------------------------------------


def register(engine: Engine, worker_id: str, stages: Sequence[str], concurrency: int) -> None:
    """Insert this worker's row (state 'running')."""
    now = utcnow()
    host, pid = worker_id.split(":")[0], os.getpid()
    with write(engine) as conn:
        conn.execute(insert(workers).values(id=worker_id, host=host, pid=pid, stages=list(stages),
                                            concurrency=concurrency, state="running",
                                            started_at=now, heartbeat_at=now, counts={}))


def beat(engine: Engine, worker_id: str, counts: dict[str, int], *, dead_after_s: float) -> None:
    """Refresh our heartbeat and counts; mark workers silent for `dead_after_s` as 'lost'."""
    now = utcnow()
    with write(engine) as conn:
        conn.execute(update(workers).where(workers.c.id == worker_id)
                     .values(heartbeat_at=now, counts=dict(counts)))
        conn.execute(update(workers).where(workers.c.state == "running",
                                           workers.c.heartbeat_at < now - timedelta(
                                               seconds=dead_after_s))
                     .values(state="lost"))


def unregister(engine: Engine, worker_id: str, counts: dict[str, int]) -> None:
    """Mark this worker stopped."""
    with write(engine) as conn:
        conn.execute(update(workers).where(workers.c.id == worker_id)
                     .values(state="stopped", stopped_at=utcnow(), counts=dict(counts)))


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """Claims and processes items of `stages` with `concurrency` threads until stopped."""

    engine: Engine
    stages: Sequence[Stage]
    concurrency: int = 1
    options: WorkerOptions = field(default_factory=WorkerOptions)
    worker_id: str = field(default_factory=new_worker_id)
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # progress for the CLI

    def __post_init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._busy = 0
        self._held: dict[tuple[str, int], Claim] = {}
        self._backend_backoff = Backoff(cap=self.options.backoff_max_s, base=1.0)
        self._sweep_lock = threading.Lock()
        self._last_sweep = float("-inf")

    # -- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask every thread to stop after its current item (SIGTERM calls this)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, until_idle: bool = False) -> dict[str, int]:
        """Work until stop() (or, with until_idle, until nothing of our stages is left); → counts."""
        self._retry_db(lambda: register(self.engine, self.worker_id,
                                        [s.name for s in self.stages], self.concurrency))
        self._event("started", {"worker": self.worker_id})
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        threads = [threading.Thread(target=self._loop, args=(i, until_idle), name=f"work-{i}",
                                    daemon=True) for i in range(self.concurrency)]
        for th in threads:
            th.start()
        try:
            while any(th.is_alive() for th in threads) and not self._stop.is_set():
                threads[0].join(0.2) if threads[0].is_alive() else time.sleep(0.2)
            # Stopping: each thread finishes its current item, within the grace period.
            grace_ends = time.monotonic() + self.options.stop_grace_s
            for th in threads:
                th.join(max(0.0, grace_ends - time.monotonic()))
        finally:
            self._stop.set()
            self._release_held()
            hb.join(5)
            self._retry_db(lambda: unregister(self.engine, self.worker_id, dict(self.counts)),
                           tries=5)
            self._event("stopped", dict(self.counts))
        return dict(self.counts)

    # -- threads -----------------------------------------------------------------------------

    def _loop(self, index: int, until_idle: bool) -> None:
        backoff = Backoff(cap=self.options.backoff_max_s)
        turn = index
        while not self._stop.is_set():
            try:
                did = self._one(turn)
                backoff.reset()
            except Exception as e:  # the loop must outlive any one failure
                if is_db_down(e):
                    self._bump("db_errors")
                    if "database is locked" in str(e):
                        self._bump("sqlite_locked")
                    delay = backoff.next()
                    log.warning("database unavailable (%s); retrying in %.1fs",
                                type(e.__cause__ or e).__name__, delay)
                    self._event("db_down", {"error": str(e).splitlines()[0], "retry_s": delay})
                    self._stop.wait(delay)
                    continue
                raise
            turn += 1
            if not did:
                try:
                    if self._sweep(force=until_idle):  # before exiting, always look once more
                        continue
                    if until_idle and self._nothing_left():
                        return
                except Exception as e:
                    if not is_db_down(e):
                        raise
                    self._bump("db_errors")
                self._stop.wait(self.options.idle_s)

    def _one(self, turn: int) -> bool:
        n = len(self.stages)
        for k in range(n):
            st = self.stages[(turn + k) % n]
            c = claim(self.engine, st, self.worker_id, lease_s=self.options.lease_s,
                      max_claims=self.options.max_claims)
            if c is None:
                continue
            with self._lock:
                self._busy += 1
                self._held[(c.stage, c.item_id)] = c
            try:
                self._process(st, c)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._held.pop((c.stage, c.item_id), None)
            return True
        return False

    def _process(self, st: Stage, c: Claim) -> None:
        guard = functools.partial(check_lease, stage=st, c=c)
        try:
            outcome = st.work(self.engine, c, guard)
        except LeaseLost as e:
            self._bump(f"{c.stage}:lease_lost")
            self._event("lease_lost", {"stage": c.stage, "item": c.item_id, "detail": str(e)})
            return
        except IntegrityError as e:
            # A unique constraint refused a second result for the same work: nothing written.
            self._bump(f"{c.stage}:duplicate_refused")
            log.warning("%s item %s: duplicate result refused: %s", c.stage, c.item_id,
                        str(e.orig).splitlines()[0])
            self._retry_db(lambda: release(self.engine, st, c), tries=3)
            return
        except BackendUnavailable as e:
            # The model is not there (server down, queue empty): hand the item back and wait.
            self._bump(f"{c.stage}:backend_unavailable")
            self._retry_db(lambda: release(self.engine, st, c), tries=3)
            self._event("backend_down", {"stage": c.stage, "error": str(e)})
            self._stop.wait(self._backend_backoff.next())
            return
        except Exception as e:
            if is_db_down(e):
                raise  # the loop backs off; the lease expires and the item is claimed again
            # A bug or an error the stage does not store: give the item back; the claims
            # counter turns an item that always fails this way into 'failed' eventually.
            log.exception("%s item %s: unexpected %s", c.stage, c.item_id, type(e).__name__)
            self._bump(f"{c.stage}:error")
            self._retry_db(lambda: release(self.engine, st, c), tries=3)
            return
        self._backend_backoff.reset()
        self._bump(f"{c.stage}:{outcome}")
        self._event("done", {"stage": c.stage, "item": c.item_id, "outcome": outcome})
        if outcome == "deferred":  # the backend failed after its retries: slow down
            self._stop.wait(self._backend_backoff.next())

    def _heartbeat_loop(self) -> None:
        dead_after = max(3 * self.options.lease_s, 3 * self.options.heartbeat)
        while not self._stop.wait(self.options.heartbeat):
            try:
                extend_leases(self.engine, self.stages, self.worker_id, self.options.lease_s)
                beat(self.engine, self.worker_id, dict(self.counts), dead_after_s=dead_after)
            except Exception as e:  # a missed beat only shortens our leases
                if not is_db_down(e):
                    log.exception("heartbeat failed")
                self._bump("heartbeat_errors")

    # -- helpers -----------------------------------------------------------------------------

    def _sweep(self, *, force: bool = False) -> int:
        """Run the stages' catch-up sweeps (one thread at a time, at most every sweep_every_s
        unless forced); → items they handled."""
        if not force and time.monotonic() - self._last_sweep < self.options.sweep_every_s:
            return 0
        if not self._sweep_lock.acquire(blocking=False):
            return 0
        try:
            self._last_sweep = time.monotonic()
            return sum(st.sweep(self.engine) for st in self.stages)
        finally:
            self._sweep_lock.release()

    def _nothing_left(self) -> bool:
        """True when no item of our stages is due (leased or not) and no thread is busy."""
        with self._lock:
            if self._busy:
                return False
        with self.engine.connect() as conn:
            for st in self.stages:
                if conn.execute(select(func.count()).select_from(st.table)
                                .where(st.due())).scalar():
                    return False
        with self._lock:
            return self._busy == 0

    def _release_held(self) -> None:
        with self._lock:
            held = list(self._held.values())
        by_name = {s.name: s for s in self.stages}
        for c in held:
            # Its thread overran the grace period: hand the item back; a late commit is refused.
            self._retry_db(lambda c=c: release(self.engine, by_name[c.stage], c), tries=3)
            self._bump(f"{c.stage}:released")

    def _retry_db(self, fn: Callable[[], Any], tries: int = 1_000_000) -> Any:
        backoff = Backoff(cap=self.options.backoff_max_s)
        for i in range(tries):
            try:
                return fn()
            except Exception as e:
                if not is_db_down(e) or i == tries - 1:
                    if is_db_down(e):
                        log.warning("giving up on the database: %s", e)
                        return None
                    raise
                self._bump("db_errors")
                time.sleep(backoff.next())
        return None

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)


def parse_stages(text: str) -> list[str]:
    """'fetch,extract,label' → validated stage names, in pipeline order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        from classifier.errors import ConfigError
        raise ConfigError(f"unknown stage(s) {bad or text!r}; choose from {', '.join(STAGES)}",
                          key="--stages")
    return [s for s in STAGES if s in names]



# ---------------------------------------------------------------------------------------------
# The stages as the worker drives them: each calls its module's one-item functions
# ---------------------------------------------------------------------------------------------


def feeds_due(now: datetime) -> Any:
    """→ SQL condition: the feed is enabled, not disabled for errors, and its next poll has come."""
    from classifier.store.tables import feeds
    return and_(feeds.c.enabled.is_(True), feeds.c.disabled_reason.is_(None),
                or_(feeds.c.next_poll_at.is_(None), feeds.c.next_poll_at <= now))


def _failure(conn: Connection, *, stage: str, detail: str, **where: Any) -> None:
    from classifier.store.tables import skips
    conn.execute(insert(skips).values(kind="failure", stage=stage, reason="lease_expired",
                                      detail=detail, created_at=utcnow(), **where))


class FetchStage:
    """Stage 1 for one feed: fetch.fetch_feed (HTTP + parse), then fetch.store_poll."""

    name = "fetch"

    def __init__(self, settings: Settings, client: Client) -> None:
        from classifier.store.tables import feeds
        self.settings, self.client, self.table = settings, client, feeds

    def due(self) -> Any:
        return feeds_due(utcnow())

    def work(self, engine: Engine, claim: Claim, guard: Guard) -> str:
        from classifier.fetch import fetch_feed, store_poll
        t = self.table
        with engine.connect() as conn:
            feed = conn.execute(select(t).where(t.c.id == claim.item_id)).one()
        outcome = fetch_feed(self.client, feed)
        with write(engine) as conn:
            guard(conn)
            # Re-read inside the write: counters may have moved since the claim.
            fresh = conn.execute(select(t).where(t.c.id == claim.item_id)).one()
            return store_poll(conn, fresh, outcome, self.settings.fetch).outcome

    def give_up(self, conn: Connection, item_id: int, claims: int) -> None:
        pass  # feeds carry no claims counter: a feed is simply polled again next time

    def sweep(self, engine: Engine) -> int:
        return 0


class ExtractStage:
    """Stages 2-4 for one entry: pipeline.work_entry (page + extract), pipeline.store_entry
    (dedupe, entry state), then route.route_article for the new article."""

    name = "extract"

    def __init__(self, settings: Settings, client: Client, *, theses: ThesesFile,
                 feeds_file: FeedsFile, router: Any = None) -> None:
        from classifier.store.tables import entries
        self.settings, self.client, self.table = settings, client, entries
        self.theses, self.feeds_file, self._router = theses, feeds_file, router

    @property
    def router(self) -> Any:
        if self._router is None:
            from classifier.route import Router
            self._router = Router(self.settings.route)
        return self._router

    def due(self) -> Any:
        return self.table.c.state == "pending"

    def work(self, engine: Engine, claim: Claim, guard: Guard) -> str:
        from classifier.pipeline import EntryFailure, entry_record, store_entry, work_entry
        from classifier.records import Stage as StageName
        from classifier.store.tables import feeds
        t = self.table
        with engine.connect() as conn:
            row = conn.execute(select(t, feeds.c.name.label("feed_name"))
                               .join(feeds, feeds.c.id == t.c.feed_id)
                               .where(t.c.id == claim.item_id)).one()
        try:
            result = work_entry(self.client, entry_record(row, row.feed_name),
                                self.settings.extract)
        except Exception as e:  # noqa: BLE001 - a crash on one page is that entry's failure
            result = EntryFailure(stage=StageName.EXTRACT, reason="crash",
                                  detail=f"{type(e).__name__}: {e}")
        with write(engine) as conn:
            guard(conn)
            state, outcome = store_entry(conn, row.id, row.feed_id, result, url=row.link)
        if state == "done" and self.theses.thesis:
            # Outside the entry's transaction: if this worker dies here, sweep() routes it.
            from classifier.route import route_article
            route_article(engine, outcome.article_id, self.theses, self.feeds_file,
                          router=self.router)
        return state

    def give_up(self, conn: Connection, item_id: int, claims: int) -> None:
        t = self.table
        feed_id = conn.execute(select(t.c.feed_id).where(t.c.id == item_id)).scalar()
        conn.execute(update(t).where(t.c.id == item_id).values(state="failed"))
        _failure(conn, stage="extract", entry_id=item_id, feed_id=feed_id,
                 detail=f"claimed {claims} times and never finished (it may crash workers)")

    def sweep(self, engine: Engine) -> int:
        """Route stored articles that still lack pairs (their worker died before routing)."""
        if not self.theses.thesis:
            return 0
        from classifier.route import route_new_articles
        sent, skipped = route_new_articles(engine, self.theses, self.feeds_file,
                                           router=self.router)
        return sent + skipped


class LabelStage:
    """Stage 5 for one pair: label.label_pair with the lease check as its guard."""

    name = "label"

    def __init__(self, theses: ThesesFile, backend: Any,
                 settings: LabelSettings | None = None) -> None:
        from classifier.store.tables import pairs
        self.theses, self.backend, self.settings, self.table = theses, backend, settings, pairs

    def due(self) -> Any:
        t = self.table
        return and_(t.c.state == "pending", t.c.thesis_id.in_([x.id for x in self.theses.thesis]))

    def work(self, engine: Engine, claim: Claim, guard: Guard) -> str:
        from classifier.label import label_pair
        res = label_pair(engine, claim.item_id, self.theses, self.backend,
                         settings=self.settings, guard=guard)
        if res.outcome in ("deferred", "gone"):
            t = self.table
            with write(engine) as conn:
                # deferred: the backend failed, not the pair; it must not count toward poison.
                conn.execute(update(t).where(t.c.id == claim.item_id, t.c.claims > 0)
                             .values(claims=t.c.claims - 1))
                conn.execute(update(t).where(t.c.id == claim.item_id,
                                             t.c.claimed_by == claim.worker_id)
                             .values(claimed_by=None, lease_until=None))
        return res.outcome

    def give_up(self, conn: Connection, item_id: int, claims: int) -> None:
        t = self.table
        row = conn.execute(select(t.c.article_id, t.c.thesis_id).where(t.c.id == item_id)).one()
        detail = f"claimed {claims} times and never finished (it may crash workers)"
        conn.execute(update(t).where(t.c.id == item_id).values(
            state="failed", error_type="lease_expired", error_detail=detail,
            updated_at=utcnow()))
        _failure(conn, stage="label", article_id=row.article_id, thesis_id=row.thesis_id,
                 detail=detail)

    def sweep(self, engine: Engine) -> int:
        return 0


def build_stages(engine: Engine, names: Sequence[str], *, settings: Settings,
                 feeds_file: FeedsFile, theses: ThesesFile, backend: Any = None,
                 client: Client | None = None, router: Any = None) -> list[Stage]:
    """Stage names → ready stages sharing one guarded HTTP client (feeds synced for fetch)."""
    if client is None and {"fetch", "extract"} & set(names):
        client = Client(settings.net)
    out: list[Stage] = []
    if "fetch" in names:
        if feeds_file.feed:
            from classifier.fetch import sync_feeds
            sync_feeds(engine, feeds_file)
        assert client is not None
        out.append(FetchStage(settings, client))
    if "extract" in names:
        assert client is not None
        out.append(ExtractStage(settings, client, theses=theses, feeds_file=feeds_file,
                                router=router))
    if "label" in names:
        if backend is None:
            from classifier.backends import get_backend
            backend = get_backend(None, settings.label)
        out.append(LabelStage(theses, backend, settings.label))
    return out


# ---------------------------------------------------------------------------------------------
# `evidence status`
# ---------------------------------------------------------------------------------------------


def status(engine: Engine, *, dead_after_s: float = 180.0) -> dict[str, Any]:
    """Store → backlog per stage, live workers, oldest pending item and failures by type."""
    from classifier.store.engine import as_utc
    from classifier.store.tables import entries, feeds, labels, pairs, skips

    now = utcnow()
    live = feeds_due(now)

    def leased(t: Table) -> Any:
        return and_(t.c.claimed_by.is_not(None), t.c.lease_until > now)

    def age(ts: datetime | None) -> float | None:
        ts = as_utc(ts)
        # max(0, ...): a heartbeat written after `now` was taken is simply fresh
        return None if ts is None else max(0.0, round((now - ts).total_seconds(), 1))

    out: dict[str, Any] = {"at": now.isoformat(), "stages": {}, "workers": [], "failures": {}}
    with engine.connect() as conn:
        one = lambda q: conn.execute(q).scalar()
        stage_rows = [
            ("fetch", feeds, live, func.min(func.coalesce(feeds.c.next_poll_at,
                                                           feeds.c.created_at))),
            ("extract", entries, entries.c.state == "pending", func.min(entries.c.created_at)),
            ("label", pairs, pairs.c.state == "pending", func.min(pairs.c.created_at)),
        ]
        for name, t, cond, oldest in stage_rows:
            out["stages"][name] = {
                "backlog": one(select(func.count()).select_from(t).where(cond)),
                "in_progress": one(select(func.count()).select_from(t)
                                   .where(cond, leased(t))),
                "oldest_pending_age_s": age(one(select(oldest).where(cond))),
            }
        out["stages"]["review"] = {
            "backlog": one(select(func.count()).select_from(labels)
                           .where(labels.c.review_state == "pending")),
            "oldest_pending_age_s": age(one(select(func.min(labels.c.created_at))
                                            .where(labels.c.review_state == "pending"))),
        }
        out["feeds"] = {
            "total": one(select(func.count()).select_from(feeds)),
            "disabled": one(select(func.count()).select_from(feeds)
                            .where(feeds.c.enabled.is_(False))),
            "erroring": one(select(func.count()).select_from(feeds)
                            .where(feeds.c.enabled.is_(True), feeds.c.consecutive_errors > 0)),
        }
        for w in conn.execute(select(workers).where(workers.c.state == "running")
                              .order_by(workers.c.started_at)):
            beat_age = age(w.heartbeat_at) or 0.0
            if beat_age > dead_after_s:
                continue
            out["workers"].append({"id": w.id, "host": w.host, "pid": w.pid,
                                   "stages": w.stages, "concurrency": w.concurrency,
                                   "heartbeat_age_s": beat_age,
                                   "up_s": age(w.started_at), "counts": w.counts})
        failures: dict[str, int] = {}
        for stage, reason, n in conn.execute(
                select(skips.c.stage, skips.c.reason, func.count())
                .where(skips.c.kind == "failure").group_by(skips.c.stage, skips.c.reason)):
            failures[f"{stage}:{reason}"] = failures.get(f"{stage}:{reason}", 0) + n
        for etype, n in conn.execute(select(pairs.c.error_type, func.count())
                                     .where(pairs.c.state == "failed")
                                     .group_by(pairs.c.error_type)):
            key = f"label:{etype or 'unknown'}"
            failures[key] = failures.get(key, 0) + n
        out["failures"] = dict(sorted(failures.items(), key=lambda kv: -kv[1]))
    return out
