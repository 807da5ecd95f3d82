"""Scale verbs: `evidence worker` (long-running, claims due work) and `evidence status`."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

from classifier.cli import main
from classifier.cli.common import Env, env_options


@main.command()
@env_options()
@click.option("--stages", default="fetch,extract,label", show_default=True, metavar="LIST",
              help="Comma-separated stages this worker takes: fetch, extract, label.")
@click.option("--concurrency", "-c", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Items processed at once (threads sharing one database pool).")
@click.option("--model", "backend", metavar="SPEC", default=None,
              help='Labeler for the label stage, as for `evidence label`: "combined" (default), '
                   '"local", "local:/path.gguf", "openai:<model>" (any OpenAI-compatible server '
                   'via OPENAI_BASE_URL), "encoder".')
@click.option("--llm", "llm_spec", metavar="SPEC", default=None,
              help="The combined labeler's LLM (default: env EVIDENCE_MODEL, else local or openai).")
@click.option("--lease", "lease_s", default=60.0, show_default=True, type=click.FloatRange(1),
              help="Seconds a claim holds without a heartbeat; heartbeats renew it every third.")
@click.option("--until-idle", is_flag=True,
              help="Exit once nothing of these stages is left to do (cron/one-shot use).")
def worker(env: Env, stages: str, concurrency: int, backend: str | None, llm_spec: str | None,
           lease_s: float, until_idle: bool) -> None:
    """Claim and process due work until stopped (SIGTERM/Ctrl-C finish the current item).

    Run one per machine or many per machine against one PostgreSQL database; items are claimed
    with FOR UPDATE SKIP LOCKED under a lease, so no item is processed twice or lost when a
    worker dies.

    \b
    Examples:
      evidence worker --db postgresql+psycopg://desk@db/evidence --concurrency 8
      evidence worker --stages label --model openai:Qwen/Qwen2.5-7B-Instruct
      evidence worker --until-idle -q
    """
    from classifier.worker import Worker, WorkerOptions, build_stages, parse_stages

    names = parse_stages(stages)
    logging.basicConfig(level=logging.WARNING if env.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from pathlib import Path

    from classifier.config import ThesesFile

    backend_obj = None
    if "label" in names:
        from classifier.cli.common import make_backend
        backend_obj = make_backend(env.settings.label, backend, llm_spec, env.engine)
    theses = env.theses if Path(env.theses_path).exists() else ThesesFile()
    stages_ = build_stages(env.engine, names, settings=env.settings, feeds_file=env.feeds,
                           theses=theses, backend=backend_obj)
    w = Worker(env.engine, stages_, concurrency=concurrency,
               options=WorkerOptions(lease_s=lease_s),
               on_event=None if env.quiet else _printer(env))

    def _graceful(signum: int, _frame: Any) -> None:
        env.console.print(f"[yellow]{signal.Signals(signum).name}: finishing current items, "
                          "then stopping[/yellow]")
        w.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    env.console.print(f"worker {w.worker_id}: stages {','.join(names)}, "
                      f"concurrency {concurrency}, lease {lease_s:g}s")
    from classifier.alerts import DeliveryLoop  # trigger alerts from what this worker labels
    alerts_loop = DeliveryLoop(env.engine, env.feeds.alert).start()
    counts = w.run(until_idle=until_idle)
    alerts_loop.stop()
    if not env.quiet:
        env.console.print("stopped: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                         or "nothing done"))


def _printer(env: Env):  # type: ignore[no-untyped-def]
    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "done":
            env.console.print(f"{data['stage']:8} {data['item']:>8}  {data['outcome']}",
                              highlight=False)
        elif kind == "lease_lost":
            env.console.print(f"[yellow]lease lost[/yellow] {data['stage']} {data['item']}: "
                              "result dropped (another worker has it)")
        elif kind == "db_down":
            env.console.print(f"[red]database unavailable[/red] ({data['error']}); "
                              f"retrying in {data['retry_s']:.1f}s")
    return on_event


@main.command()
@env_options(listing=True)
@click.option("--dead-after", "dead_after_s", default=180.0, show_default=True,
              help="Seconds without a heartbeat after which a worker is not counted alive.")
def status(env: Env, dead_after_s: float) -> None:
    """Backlog per stage, workers alive, oldest pending item, failures by type.

    \b
    Examples:
      evidence status
      evidence status --json --db postgresql+psycopg://desk@db/evidence
    """
    from classifier.worker import status as collect

    data = collect(env.engine, dead_after_s=dead_after_s)
    if env.as_json:
        env.emit(data)
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    t = Table(title="Backlog", title_justify="left")
    for col in ("stage", "pending", "in progress", "oldest pending"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in data["stages"].items():
        t.add_row(name, str(s["backlog"]), str(s.get("in_progress", "-")),
                  _age(s["oldest_pending_age_s"]))
    out.print(t)
    f = data["feeds"]
    out.print(f"Feeds: {f['total']} total, {f['disabled']} disabled, {f['erroring']} erroring")
    if data["workers"]:
        w = Table(title=f"Workers alive: {len(data['workers'])}", title_justify="left")
        for col in ("id", "stages", "threads", "last heartbeat", "done"):
            w.add_column(col)
        for r in data["workers"]:
            done = sum(v for k, v in (r["counts"] or {}).items()
                       if ":" in k and not k.endswith(("lease_lost", "error", "released")))
            w.add_row(r["id"], ",".join(r["stages"]), str(r["concurrency"]),
                      _age(r["heartbeat_age_s"]) + " ago", str(done))
        out.print(w)
    else:
        out.print("Workers alive: 0")
    if data["failures"]:
        ft = Table(title="Failures by type", title_justify="left")
        ft.add_column("stage:type")
        ft.add_column("count", justify="right")
        for k, v in data["failures"].items():
            ft.add_row(k, str(v))
        out.print(ft)
    else:
        out.print("Failures: none")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
