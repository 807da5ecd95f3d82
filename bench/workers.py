"""Labeling throughput with 1, 2 and 4 workers against one PostgreSQL, in the same run.

The model is the shipped scripted backend with a fixed latency per call (default 200 ms),
standing in for a model server that answers concurrent requests in parallel (vLLM, an API).
Each worker is a separate process (`Worker`, label stage, one thread), as `evidence worker
--stages label --concurrency 1` on its own machine would be. Each round gets a fresh database
with `per_worker × N` pending pairs on real article bodies (FNC-1), and is timed from the
workers' start to the last worker's exit (start-up, claims, heartbeats and commits included).

    .venv/bin/python bench/workers.py                      # a throwaway cluster is started
    .venv/bin/python bench/workers.py --db postgresql+psycopg://user@host/postgres

Prints throughput per round and the ratio against one worker (goal: 4 workers >= 3.3x).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.backends import ScriptedBackend
from classifier.config import ThesesFile, ThesisConfig
from classifier.store import connect, migrate, utcnow, write
from classifier.store.tables import articles, labels, llm_calls, pairs
from classifier.worker import LabelStage, Worker, WorkerOptions

CORPUS = ROOT.parent / "shared" / "corpora" / "fnc-1" / "train_bodies.csv"
THESIS = ThesisConfig(
    id="oss-parity", title="Open-source frontier parity",
    statement="Open-weights models match or beat the best contemporaneous closed frontier "
              "models on publicly available reasoning and coding benchmarks.",
    probability=0.75, route=False)
ANSWER = json.dumps({"rationale": "The article is not about AI models or benchmarks.",
                     "quotes": [], "relevant": False, "evidence_type": None, "direction": None,
                     "strength": None, "trigger": None, "confidence": 0.9})


class LatencyBackend(ScriptedBackend):
    """The scripted backend, answering after a fixed latency (a model server's response time)."""

    def __init__(self, n: int, latency_s: float) -> None:
        super().__init__([ANSWER] * n)
        self.latency_s = latency_s

    def _complete(self, messages):  # type: ignore[no-untyped-def]
        time.sleep(self.latency_s)
        return super()._complete(messages)


def bodies(n: int) -> list[str]:
    csv.field_size_limit(10**8)
    with open(CORPUS, encoding="utf-8") as f:
        out = [r["articleBody"] for r in csv.DictReader(f) if len(r["articleBody"]) >= 400]
    return [f"{out[i % len(out)]}\n\n(copy {i})" for i in range(n)]


def seed(url: str, n: int) -> None:
    """A fresh database at `url` → migrated, with n articles and n pending pairs."""
    engine = connect(url)
    migrate(engine)
    now = utcnow()
    with write(engine) as conn:
        for i, body in enumerate(bodies(n)):
            aid = conn.execute(insert(articles).values(
                url=f"https://news.example/{i}", canonical_url=f"https://news.example/{i}",
                title=f"Story {i}", text=body,
                text_sha256=hashlib.sha256(body.encode()).hexdigest(), site_name="news.example",
                extracted_from="page", created_at=now)).inserted_primary_key[0]
            conn.execute(insert(pairs).values(article_id=aid, thesis_id=THESIS.id,
                                              state="pending", created_at=now, updated_at=now))
    engine.dispose()


def one_worker(url: str, n_answers: int, latency_s: float) -> None:
    """Child process: one label worker, one thread, until nothing is left."""
    engine = connect(url)
    stage = LabelStage(ThesesFile(thesis=[THESIS]), LatencyBackend(n_answers, latency_s))
    Worker(engine, [stage], concurrency=1,
           options=WorkerOptions(lease_s=60, heartbeat_s=5, idle_s=0.05)).run(until_idle=True)
    engine.dispose()


def round_(base_url: str, n_workers: int, per_worker: int, latency_s: float) -> dict:
    """One round on a fresh database → {workers, pairs, seconds, per_second}."""
    name = f"bench_{n_workers}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    try:
        n = per_worker * n_workers
        seed(url, n)
        started = time.perf_counter()
        pids = []
        for _ in range(n_workers):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    one_worker(url, n, latency_s)
                except BaseException:  # noqa: BLE001
                    import traceback
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            pids.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        seconds = time.perf_counter() - started
        engine = connect(url)
        with engine.connect() as c:
            done = c.execute(select(func.count()).select_from(labels)).scalar()
            calls = c.execute(select(func.count()).select_from(llm_calls)).scalar()
            left = c.execute(select(func.count()).select_from(pairs)
                             .where(pairs.c.state != "labeled")).scalar()
        engine.dispose()
        if any(codes) or done != n or left or calls != n:
            raise SystemExit(f"round with {n_workers} workers went wrong: exit codes {codes}, "
                             f"{done}/{n} labels, {calls} calls, {left} pairs not labeled")
        return {"workers": n_workers, "pairs": n, "seconds": round(seconds, 2),
                "per_second": round(n / seconds, 2)}
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="PostgreSQL URL of a maintenance database (default: start a "
                                 "throwaway cluster with scripts/pgcluster.py)")
    ap.add_argument("--per-worker", type=int, default=40, help="pairs per worker per round")
    ap.add_argument("--latency-ms", type=float, default=200.0, help="scripted latency per call")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    cluster = None
    base = args.db
    if base is None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from pgcluster import Cluster
        cluster = Cluster(tempfile.mkdtemp(prefix="evidence-bench-pg-"))
        base = cluster.start()
    try:
        results = [round_(base, int(n), args.per_worker, args.latency_ms / 1000)
                   for n in args.workers.split(",")]
    finally:
        if cluster is not None:
            cluster.destroy()
    one = results[0]["per_second"]
    for r in results:
        r["ratio"] = round(r["per_second"] / one, 2)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"labeling throughput, scripted backend at {args.latency_ms:g} ms per call, "
              f"PostgreSQL, {args.per_worker} pairs per worker")
        print(f"{'workers':>8} {'pairs':>6} {'seconds':>8} {'pairs/s':>8} {'vs 1':>6}")
        for r in results:
            print(f"{r['workers']:>8} {r['pairs']:>6} {r['seconds']:>8.2f} "
                  f"{r['per_second']:>8.2f} {r['ratio']:>5.2f}x")
        four = next((r for r in results if r["workers"] == 4), None)
        if four is not None and results[0]["workers"] == 1:
            verdict = "met" if four["ratio"] >= 3.3 else "NOT met"
            print(f"goal 4 workers >= 3.3x one: {verdict} ({four['ratio']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
