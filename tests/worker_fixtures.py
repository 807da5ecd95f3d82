"""Helpers for worker and fault tests: a local news site built from real article bodies
(FNC-1 and ARC), forked worker processes, and the end-state invariants every fault test checks."""

from __future__ import annotations

import csv
import html
import os
import random
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine, func, select

from classifier.backends import ScriptedBackend
from classifier.config import FeedConfig, FeedsFile, NetSettings, Settings, ThesesFile
from classifier.store import connect
from classifier.store.tables import (
    articles,
    entries,
    feeds,
    labels,
    llm_calls,
    pairs,
    skips,
    workers,
)
from classifier.worker import Worker, WorkerOptions, build_stages
from tests.label_fixtures import IRRELEVANT, THESIS

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
THESES = ThesesFile(thesis=[THESIS.model_copy(update={"route": False})])  # every article asked
SETTINGS = Settings(net=NetSettings(allow_private_networks=True, deadline_s=30.0,
                                    connect_timeout_s=5.0, per_host_connections=4))
FINAL_ENTRY = {"done", "skipped", "failed"}
FINAL_PAIR = {"labeled", "failed", "skipped"}


@cache
def bodies() -> list[tuple[str, str]]:
    """→ (title, body) of distinct real news articles (FNC-1 then ARC bodies, >= 400 chars)."""
    csv.field_size_limit(10**8)
    out, seen = [], set()
    for name in ("fnc-1/train_bodies.csv", "arc-fnc/arc_bodies.csv"):
        with open(CORPORA / name, encoding="utf-8") as f:
            for row in csv.DictReader(f):
                body = row["articleBody"].strip()
                key = " ".join(body.split()).lower()
                if len(body) < 400 or key in seen:
                    continue
                seen.add(key)
                first = body.split(".")[0][:90].strip()
                out.append((first or f"Article {row['Body ID']}", body))
    return out


@cache
def shared_router() -> Any:
    """The real routing model (all-MiniLM-L6-v2), loaded once per test session: forked workers
    inherit it instead of each loading it for seconds."""
    from classifier.route import Router
    r = Router(SETTINGS.route)
    r.model  # noqa: B018
    return r


def page(title: str, body: str) -> bytes:
    """Article text → a plain news page trafilatura extracts it from."""
    paras = "".join(f"<p>{html.escape(p.strip())}</p>" for p in body.split("\n") if p.strip())
    return (f"<!doctype html><html lang=en><head><title>{html.escape(title)}</title></head><body>"
            f"<header><nav><a href=/>Home</a> <a href=/world>World</a></nav></header>"
            f"<article><h1>{html.escape(title)}</h1>{paras}</article>"
            f"<footer>Copyright The Daily Test</footer></body></html>").encode()


def rss(items: Sequence[tuple[str, str, str]]) -> str:
    """(guid, link, title) triples → an RSS 2.0 document."""
    parts = "".join(f"<item><guid>{g}</guid><title>{html.escape(t)}</title><link>{link}</link>"
                    f"<description>{html.escape(t)}</description></item>" for g, link, t in items)
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Test</title>{parts}</channel></rss>")


class SlowScripted(ScriptedBackend):
    """The shipped scripted backend plus a fixed latency per call (stands in for a model server)."""

    def __init__(self, items: Any = (), *, latency_s: float = 0.0,
                 notify_fd: int | None = None) -> None:
        super().__init__(items)
        self.latency_s, self.notify_fd = latency_s, notify_fd

    def _complete(self, messages):  # type: ignore[no-untyped-def]
        if self.notify_fd is not None:
            os.write(self.notify_fd, b"c")  # a call has started (tests freeze workers here)
        if self.latency_s:
            time.sleep(self.latency_s)
        return super()._complete(messages)


def answers(n: int, *, invalid_every: int = 0, seed: int = 0) -> list[Any]:
    """→ n scripted answers: valid labels, with a burst of 3 invalid ones (a failed pair) and a
    single invalid one (a re-ask) now and then when invalid_every is set."""
    rnd = random.Random(seed)
    out: list[Any] = []
    while len(out) < n:
        if invalid_every and rnd.random() < 1 / invalid_every:
            out += ["not json", '{"relevant": "maybe"}', "still not json"]
        elif invalid_every and rnd.random() < 1 / invalid_every:
            out += ["{broken", IRRELEVANT]
        else:
            out.append(IRRELEVANT)
    return out


def make_backend(n_answers: int, latency_s: float, invalid_every: int = 0,
                 seed: int | None = None, notify_fd: int | None = None) -> ScriptedBackend:
    """→ a scripted backend with enough answers for a run, latency per call."""
    seed = os.getpid() if seed is None else seed
    return SlowScripted(answers(n_answers, invalid_every=invalid_every, seed=seed),
                        latency_s=latency_s, notify_fd=notify_fd)


def worker_main(db_url: str, names: Sequence[str], *, options: WorkerOptions, concurrency: int,
                until_idle: bool = False, latency_s: float = 0.0, n_answers: int = 5000,
                invalid_every: int = 0, feeds_file: FeedsFile | None = None,
                router: Any = None, client: Any = None, settings: Settings = SETTINGS,
                theses: ThesesFile = THESES, ready_fd: int | None = None,
                notify_calls: bool = False) -> dict[str, int]:
    """One worker (what `evidence worker` runs), in this process → its counts."""
    stop_early: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop_early.append(1))  # before the worker exists
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by fork()
    if router is not None:
        import torch
        torch.set_num_threads(1)  # forked children share two cores
    engine = connect(db_url)
    backend = (make_backend(n_answers, latency_s, invalid_every,
                            notify_fd=ready_fd if notify_calls else None)
               if "label" in names else None)
    stages = build_stages(engine, names, settings=settings, feeds_file=feeds_file or FeedsFile(),
                          theses=theses, backend=backend, router=router, client=client)
    def on_event(kind: str, _data: dict[str, Any]) -> None:
        # Progress for the parent: "s" registered, "d" an item finished (kill points are drawn
        # from these so that a loaded machine still gets kills in the middle of real work).
        if ready_fd is not None and kind in ("started", "done"):
            os.write(ready_fd, b"s" if kind == "started" else b"d")

    w = Worker(engine, stages, concurrency=concurrency, options=options, on_event=on_event)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())  # as `evidence worker` does
    if stop_early:
        w.stop()
    try:
        return w.run(until_idle=until_idle)
    finally:
        engine.dispose()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the test process dies (no orphaned workers)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def fork(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run fn(*args, **kwargs) in a forked child process → its pid (exit 0 ok, 1 on error)."""
    # SIGTERM stays blocked in the child until worker_main has its handler (then unblocks it):
    # a SIGTERM sent right after the fork is handled, not fatal.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            _die_with_parent()
            fn(*args, **kwargs)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def fork_worker(children: Children, **kwargs: Any) -> tuple[int, int]:
    """worker_main(**kwargs) in a forked child → (pid, fd that becomes readable once the worker
    has registered)."""
    r, w = os.pipe()
    pid = children.add(fork(worker_main, ready_fd=w, **kwargs))
    os.close(w)
    return pid, r


class Children:
    """Forked workers of one test; whatever is still running at exit is SIGKILLed and reaped."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def add(self, pid: int) -> int:
        self.pids.add(pid)
        return pid

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def wait(pid: int, timeout: float) -> int:
    """Wait for a child → its exit status (raises TimeoutError, killing it, after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError(f"worker {pid} still running after {timeout}s")
        time.sleep(0.05)


def feeds_file_for(rows: Sequence[tuple[str, str]]) -> FeedsFile:
    """(name, url) pairs → a FeedsFile."""
    return FeedsFile(feed=[FeedConfig(name=n, url=u, poll_minutes=60) for n, u in rows])


def end_state(engine: Engine) -> dict[str, Any]:
    """Store → the invariants of a finished run, as counts (every test asserts on these)."""
    with engine.connect() as c:
        one = lambda q: c.execute(q).scalar()
        return {
            "entries": dict(c.execute(select(entries.c.state, func.count())
                                      .group_by(entries.c.state)).all()),
            "pairs": dict(c.execute(select(pairs.c.state, func.count())
                                    .group_by(pairs.c.state)).all()),
            "articles": one(select(func.count()).select_from(articles)),
            "labels": one(select(func.count()).select_from(labels)),
            "llm_calls": one(select(func.count()).select_from(llm_calls)),
            # no duplicate result: at most one label per pair and per (article, thesis)
            "pairs_with_2_labels": one(select(func.count()).select_from(
                select(labels.c.pair_id).group_by(labels.c.pair_id)
                .having(func.count() > 1).subquery())),
            "articles_with_2_labels": one(select(func.count()).select_from(
                select(labels.c.article_id, labels.c.thesis_id)
                .group_by(labels.c.article_id, labels.c.thesis_id)
                .having(func.count() > 1).subquery())),
            "labeled_pairs_without_label": one(
                select(func.count()).select_from(pairs).where(
                    pairs.c.state == "labeled",
                    ~select(labels.c.id).where(labels.c.pair_id == pairs.c.id).exists())),
            "articles_without_pair": one(
                select(func.count()).select_from(articles).where(
                    ~select(pairs.c.id).where(pairs.c.article_id == articles.c.id).exists())),
            "done_entries_without_article": one(
                select(func.count()).select_from(entries).where(
                    entries.c.state == "done", entries.c.article_id.is_(None))),
            # no orphaned claim
            "claimed": sum(one(select(func.count()).select_from(t).where(
                t.c.claimed_by.is_not(None))) for t in (feeds, entries, pairs)),
            "feeds_unpolled": one(select(func.count()).select_from(feeds).where(
                feeds.c.last_polled_at.is_(None))),
            # claims beyond one per item: items whose worker died (or lease ran out) mid-way
            "reclaims": sum(one(select(func.coalesce(func.sum(t.c.claims), 0) - func.count())
                                .select_from(t).where(t.c.claims > 0)) for t in (entries, pairs)),
            "lease_expired": dict(c.execute(select(skips.c.stage, func.count())
                                            .where(skips.c.reason == "lease_expired")
                                            .group_by(skips.c.stage)).all()),
            "workers": dict(c.execute(select(workers.c.state, func.count())
                                      .group_by(workers.c.state)).all()),
        }


def worker_counts(engine: Engine) -> dict[str, int]:
    """Store → the workers' counts summed over every registered worker."""
    total: dict[str, int] = {}
    with engine.connect() as c:
        for (counts,) in c.execute(select(workers.c.counts)):
            for k, v in (counts or {}).items():
                total[k] = total.get(k, 0) + v
    return total
