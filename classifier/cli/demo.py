"""`evidence demo`: the offline main job: serve the bundled demo set on 127.0.0.1 and run the
pipeline against it into a fresh database, then say what happened."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from classifier.cli import main
from classifier.config import load_settings, load_theses
from classifier.errors import EvidenceError
from classifier.store import connect, migrate
from classifier.store.tables import feeds

DEFAULT_DEMO_DB = "sqlite:///demo.db"


def _fresh_engine(db: str | None):  # type: ignore[no-untyped-def]
    """--db value → migrated engine on an empty database (the default ./demo.db is recreated)."""
    url = db or DEFAULT_DEMO_DB
    if db is None:
        # our own file from an earlier demo: replace it so the run starts fresh
        for suffix in ("", "-wal", "-shm"):
            Path("demo.db" + suffix).unlink(missing_ok=True)
    engine = connect(url)
    migrate(engine)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(feeds)).scalar_one()
    if n:
        engine.dispose()
        shown = make_url(url).render_as_string(hide_password=True)
        raise EvidenceError(
            f"{shown} already holds {n} feeds; the demo needs a fresh database "
            "(omit --db to use ./demo.db, which the demo recreates)"
        )
    return engine


@main.command()
@click.option(
    "--db",
    metavar="URL",
    default=None,
    help="Fresh database to fill (default ./demo.db, recreated on each demo). "
    "Deliberately not read from EVIDENCE_DB.",
)
@click.option(
    "--model",
    default="local",
    show_default=True,
    metavar="SPEC",
    help="Labeling backend: local (the embedded model), local:PATH.gguf, "
    "openai:MODEL, or none to stop before labeling.",
)
@click.option(
    "--label-limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Label at most N of the routed pairs (default all; the rest stay pending).",
)
@click.option(
    "--theses",
    "theses_path",
    metavar="PATH",
    default=None,
    help="Theses file (default: the demo's copy of the repo's theses.toml).",
)
@click.option(
    "--config",
    envvar="EVIDENCE_CONFIG",
    metavar="PATH",
    help="Settings file (default ./evidence.toml if present).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or report.")
def demo(
    db: str | None,
    model: str,
    label_limit: int | None,
    theses_path: str | None,
    config: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the whole pipeline offline on the bundled demo news site.

    Starts an HTTP server on 127.0.0.1 (ephemeral port) serving three feeds (RSS and Atom) and
    about twenty article pages, runs `evidence run` once against it into a fresh database, and
    prints counts per stage, every skip with its reason, and the stories that joined
    near-duplicates. Needs no network. Example:

        evidence demo --model none && evidence articles --db sqlite:///demo.db
    """
    from classifier.demo import demo_theses, run_demo

    console = Console(stderr=True, quiet=quiet)
    settings = load_settings(config)
    theses = load_theses(theses_path) if theses_path else demo_theses()
    backend = None
    if model != "none":
        from classifier.backends import get_backend

        backend = get_backend(model, settings.label)
    engine = _fresh_engine(db)
    try:
        with Progress(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=quiet or as_json,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            rep = run_demo(
                engine,
                settings,
                theses=theses,
                backend=backend,
                progress=progress,
                label_limit=label_limit,
            )
    finally:
        engine.dispose()
    if as_json:
        click.echo(rep.model_dump_json(indent=2))
        return
    if quiet:
        return
    _print_report(Console(), rep, labeled=backend is not None)


def _print_report(out: Console, rep, *, labeled: bool) -> None:  # type: ignore[no-untyped-def]
    c = rep.counts
    out.print(
        f"[bold]Demo[/bold]: served {rep.requests} requests from {rep.base_url} into {rep.db_url}"
    )
    t = Table(title="What each stage did", show_header=True)
    t.add_column("stage")
    t.add_column("result", justify="left")
    t.add_row(
        "1 fetch",
        f"{c.feeds_polled} feeds polled ({c.feeds_failed} failed, "
        f"{c.feeds_not_modified} not modified), {c.entries_new} new entries",
    )
    t.add_row(
        "2 extract",
        f"{rep.articles + c.duplicates} texts extracted, "
        f"{rep.from_summary} of them from the feed summary (page unavailable); "
        f"{c.skipped} skipped, {c.failed} failed",
    )
    t.add_row(
        "3 dedupe",
        f"{c.articles_new} new articles in {rep.stories} stories, "
        f"{c.duplicates} duplicates dropped",
    )
    t.add_row("4 route", f"{c.pairs_routed} pairs sent to the labeler, {c.pairs_skipped} skipped")
    t.add_row(
        "5 label",
        f"{c.labels_new} labels queued for review, {c.labels_failed} failed"
        if labeled
        else "not run (--model none)",
    )
    out.print(t)
    if rep.skipped:
        out.print(
            f"[bold]Skipped or failed[/bold] ({len(rep.skipped)}, stored in the skips table):"
        )
        for r in rep.skipped:
            out.print(
                f"  - {r.feed}: {r.title[:70]}\n    {r.stage} {r.kind} [bold]{r.reason}[/bold]: "
                f"{r.detail[:200]}",
                soft_wrap=True,
            )
    for st in rep.multi_stories:
        out.print(f"Story #{st.story_id} joins {len(st.titles)} articles:")
        for title, feed in zip(st.titles, st.feeds, strict=True):
            out.print(f"  - {title}  [dim]({feed})[/dim]", soft_wrap=True)
    out.print(f"Next: evidence articles --db {rep.db_url}")
