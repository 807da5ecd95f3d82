"""`evidence demo`: the offline main job: serve the bundled demo set on 127.0.0.1 and run the
pipeline against it into a fresh database, then say what happened."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from classifier.cli import main
from classifier.config import load_settings, load_theses
from classifier.errors import EvidenceError
from classifier.store import connect, migrate
from classifier.store.tables import feeds

if TYPE_CHECKING:
    from classifier.demo import DemoLogin
    from classifier.demo_summary import (
        Agreement,
        DemoSummary,
        LedgerPicture,
        PairView,
        ThesisSummary,
    )
    from classifier.records import GoldLabel

DEFAULT_DEMO_DB = "sqlite:///demo.db"


def _fresh_engine(db: str | None):  # type: ignore[no-untyped-def]
    """--db value → (migrated engine on an empty database, whether the demo.db it replaced held
    the demo user); the default ./demo.db is recreated."""
    from classifier.demo import had_demo_user

    url = db or DEFAULT_DEMO_DB
    had_user = False
    if db is None:
        # our own file from an earlier demo: replace it so the run starts fresh
        had_user = had_demo_user(Path("demo.db"))
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
    return engine, had_user


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
    default="combined",
    show_default=True,
    metavar="SPEC",
    help="Labeler: combined (the encoder + the LLM from --llm), local (the embedded LLM alone), "
    "local:PATH.gguf, openai:MODEL, encoder, or none to stop before labeling.",
)
@click.option("--llm", "llm_spec", metavar="SPEC", default=None,
              help="The combined labeler's LLM (default: env EVIDENCE_MODEL, else local).")
@click.option(
    "--ask-llm",
    type=click.Choice(["all", "uncertain", "relevant", "none"]),
    default="uncertain",
    show_default=True,
    help="Which pairs the combined labeler sends to the LLM ([label] llm): uncertain skips "
    "the pairs the encoder is sure of.",
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
@click.option("--json", "as_json", is_flag=True, help="Print the report and summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or report.")
@click.option(
    "--serve",
    "serve_after",
    is_flag=True,
    help="Then serve the review desk on 127.0.0.1 (sign in as demo); Ctrl-C stops.",
)
@click.option(
    "--port", default=8000, show_default=True, type=int, help="Port of the desk for --serve."
)
def demo(
    db: str | None,
    model: str,
    llm_spec: str | None,
    ask_llm: str,
    label_limit: int | None,
    theses_path: str | None,
    config: str | None,
    as_json: bool,
    quiet: bool,
    serve_after: bool,
    port: int,
) -> None:
    """Run the whole pipeline offline on the bundled demo news site.

    Starts an HTTP server on 127.0.0.1 (ephemeral port) serving three feeds (RSS and Atom) and
    about twenty article pages, runs `evidence run` once against it into a fresh database, and
    prints counts per stage, every skip with its reason, the stories that joined
    near-duplicates, then each thesis's labels beside the demo set's expected labels, the
    agreement per field and what the ledger would suggest from either. Creates the desk's
    `demo` editor with a new password (shown once) and prints how to open the desk. Needs no
    network. Example:

        evidence demo --label-limit 5 --serve
    """
    from classifier.demo import (
        DEMO_DATA,
        demo_login,
        demo_theses,
        desk_command,
        run_demo,
        shown_url,
    )
    from classifier.demo_summary import load_expected, pair_views, summarize

    console = Console(stderr=True, quiet=quiet)
    settings = load_settings(config)
    theses = load_theses(theses_path) if theses_path else demo_theses()
    theses_file = Path(theses_path).resolve() if theses_path else DEMO_DATA / "theses.toml"
    expected = load_expected()
    backend = None
    if model != "none":
        from classifier.backends import get_backend

        settings = settings.model_copy(
            update={"label": settings.label.model_copy(update={"llm": ask_llm})})
        backend = get_backend(model, settings.label, llm=llm_spec)
    engine, had_user = _fresh_engine(db)
    try:
        show_bar = not (quiet or as_json)
        with Progress(
            TextColumn("{task.description:>8}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            transient=True,
            disable=not show_bar,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total, note="")
                note = ""
                if stage == "label" and done and show_bar:
                    with engine.connect() as conn:
                        note = _running_note(pair_views(conn, expected))
                bar.update(tasks[stage], completed=done, total=total, note=note)

            started = time.perf_counter()
            rep = run_demo(
                engine,
                settings,
                theses=theses,
                backend=backend,
                progress=progress,
                label_limit=label_limit,
            )
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            summary = summarize(conn, theses, expected)
        login = demo_login(engine, replacing=had_user)
        db_shown = shown_url(engine.url)
        command = desk_command(db_shown, theses_file, port=port)
        if as_json:
            data = rep.model_dump(mode="json")
            data["seconds"] = round(seconds, 1)
            data["summary"] = summary.model_dump(mode="json")
            data["login"] = login.model_dump(mode="json")
            data["desk"] = {"command": command, "url": f"http://127.0.0.1:{port}/"}
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        elif not quiet:
            out = Console()
            _print_report(out, rep, labeled=backend is not None)
            _print_summary(out, summary, labeled=backend is not None)
            out.print(f"The run took {seconds:.0f} s (fetch to label, {len(summary.theses)} "
                      f"theses, {summary.labeled} pairs labeled).")
            _print_login(out, login, command, serving=serve_after, port=port)
        if serve_after:
            from classifier.cli.review import run_desk

            run_desk(engine, theses, host="127.0.0.1", port=port, console=console, quiet=quiet)
    finally:
        engine.dispose()


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
        + (f"; the LLM skipped {c.labels_llm_skipped} pairs the encoder was sure of"
           if c.labels_llm_skipped else "")
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
    out.print(f"Articles: evidence articles --db {rep.db_url}")


# ---------------------------------------------------------------------------------------------
# The summary: labels beside the expected ones, agreement, the ledger, how to open the desk
# ---------------------------------------------------------------------------------------------

SHORT = {"relevant": "relevant", "evidence_type": "type", "direction": "direction",
         "strength": "strength", "trigger": "trigger", "all": "all fields"}
MARK = {"relevant": "rel", "evidence_type": "type", "direction": "dir", "strength": "str",
        "trigger": "trig"}


def _cell(lab: GoldLabel | None, differs: tuple[str, ...] = ()) -> str:
    """Judged fields → 'direct supports strong ▸trigger' (markup), the differing ones in red."""
    if lab is None:
        return "[red]failed[/red]"

    def mark(field: str, text: str) -> str:
        return f"[bold red]{escape(text)}[/bold red]" if field in differs else escape(text)

    if not lab.relevant:
        return mark("relevant", "not relevant")
    parts = [mark(f, getattr(lab, f).value) for f in ("evidence_type", "direction", "strength")]
    if lab.trigger or "trigger" in differs:
        parts.append(mark("trigger", f"▸{lab.trigger or 'no trigger'}"))
    return " ".join(parts)


def _mark(v: PairView) -> str:
    """Pair → '✓', '✗ dir,trig' (the fields that differ) or 'no label' (markup)."""
    if v.expected is None:
        return "[dim]no expected label[/dim]"
    if v.proposed is None:
        return "[red]✗ no label[/red]"
    if not v.differs:
        return "[green]✓[/green]"
    return f"[red]✗ {','.join(MARK[f] for f in v.differs)}[/red]"


def _agreement_line(agreement: Sequence[Agreement]) -> str:
    """Agreement records → 'relevant 8 of 9 pairs, direction 4 of 6 relevant pairs, ...'."""
    return ", ".join(f"{SHORT[a.field]} {a.agree} of {a.total} {a.over}" for a in agreement)


def _ledger_line(lg: LedgerPicture) -> str:
    """LedgerPicture → one line (markup): the suggestion from the proposals vs the expected."""
    delta = (lg.proposed - lg.expected) * 100
    effect = ("the labeler's differences would not move this forecast" if abs(delta) < 0.5 else
              f"the labeler's differences would put it {abs(delta):.0f} points too "
              f"{'high' if delta > 0 else 'low'}")
    return (f"Ledger from {lg.prior:.0%}: every label approved as proposed → "
            f"[bold]{lg.proposed:.0%}[/bold] ({lg.counted_proposed} items), the expected labels "
            f"→ [bold]{lg.expected:.0%}[/bold] ({lg.counted_expected} items): {effect}.")


def _running_note(views: Sequence[PairView]) -> str:
    """Pairs labeled so far → the progress bar's note: running agreement and the last pair."""
    judged = [v for v in views if v.proposed is not None and v.expected is not None]
    if not judged:
        return ""
    same = sum(not v.differs for v in judged)
    relevant = [v for v in judged if v.expected.relevant]  # type: ignore[union-attr]
    direction = sum(v.proposed.direction == v.expected.direction  # type: ignore[union-attr]
                    for v in relevant)
    last = max(views, key=lambda v: v.label_id or 0)
    tick = "[green]✓[/green]" if not last.differs else "[red]✗[/red]"
    title = last.title if len(last.title) <= 30 else last.title[:29] + "…"
    return (f"as expected {same}/{len(judged)} · direction {direction}/{len(relevant)} · "
            f"{tick} {escape(title)}")


def _thesis_table(ts: ThesisSummary) -> Table:
    """One thesis's pairs → a table: article, proposed, confidence, expected, mark."""
    t = Table(title=f"{ts.thesis_id}: {escape(ts.title)}", title_justify="left")
    t.add_column("article", ratio=4)
    t.add_column("proposed", ratio=2)
    t.add_column("conf", justify="right")
    t.add_column("expected", ratio=2)
    t.add_column("", no_wrap=True)
    for v in ts.pairs:
        t.add_row(escape(v.title), _cell(v.proposed, v.differs),
                  f"{v.confidence:.2f}" if v.confidence is not None else "",
                  _cell(v.expected) if v.expected else "[dim]none[/dim]", _mark(v))
    return t


def _print_summary(out: Console, summary: DemoSummary, *, labeled: bool) -> None:
    """DemoSummary → per thesis its table, agreement, undermining pairs caught, ledger; totals."""
    if not labeled:
        out.print(f"Labels: not run (--model none); the expected labels are in "
                  f"{summary.expected_file}", soft_wrap=True)
        return
    for ts in summary.theses:
        if ts.pairs:
            out.print(_thesis_table(ts))
        else:
            out.print(f"[bold]{ts.thesis_id}[/bold]: no labeled pairs")
        if ts.pending:
            out.print(f"  {ts.pending} routed pairs still pending (--label-limit)")
        if ts.pairs:
            out.print(f"  Agreement: {_agreement_line(ts.agreement)}.", soft_wrap=True)
            out.print(f"  Undermining pairs caught: {ts.undermines_caught} of "
                      f"{ts.undermines_expected}.")
        out.print(f"  {_ledger_line(ts.ledger)}", soft_wrap=True)
    out.print(f"[bold]All theses[/bold]: {summary.labeled} labeled, {summary.failed} failed, "
              f"{summary.pending} pending. Agreement: {_agreement_line(summary.agreement)}. "
              f"Undermining pairs caught: {summary.undermines_caught} of "
              f"{summary.undermines_expected}.", soft_wrap=True)


def _print_login(out: Console, login: DemoLogin, command: str, *, serving: bool,
                 port: int) -> None:
    """The demo editor's login (shown once) and how to open the desk, or that it opens now."""
    if login.replaced:
        out.print(f"Replaced the password of the desk's [bold]{login.name}[/bold] editor: the "
                  "one an earlier demo printed no longer works.", soft_wrap=True)
    out.print(f"Sign in as [bold]{login.name}[/bold], password [bold]{escape(login.password)}"
              "[/bold] (shown only now).", soft_wrap=True)
    if serving:
        out.print(f"Open http://127.0.0.1:{port}/ and sign in as {login.name} with the password "
                  "above (the desk starts now; Ctrl-C stops it).", soft_wrap=True)
    else:
        out.print(f"Open the review desk: {escape(command)}   then http://127.0.0.1:{port}/ "
                  "(or run the demo with --serve)", soft_wrap=True)
