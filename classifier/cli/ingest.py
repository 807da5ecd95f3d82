"""Stage 1–3 verbs: fetch, feeds, articles, show, run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import and_, func, select

from classifier.cli import main
from classifier.cli.common import Env, env_options
from classifier.errors import ConfigError, EvidenceError
from classifier.fetch import enable_feed, feed_health, sync_feeds
from classifier.label import history as label_history
from classifier.pipeline import fetch_once, run_once
from classifier.records import RunCounts
from classifier.store import utcnow
from classifier.store.engine import as_utc
from classifier.store.tables import articles, entries, feeds, skips

STATES = ("all", "pending", "done", "skipped", "failed")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _progress(env: Env) -> Iterator[Any]:
    """Env → progress callback(stage, done, total) drawing a rich bar on stderr (None if quiet)."""
    if env.quiet or env.as_json:
        yield None
        return
    bar = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=env.console, transient=False)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


def _stdout() -> Console:
    # Listings go to stdout (pipe them); progress and messages go to env.console (stderr).
    return Console(highlight=False)


def _ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    secs = (as_utc(ts) - now).total_seconds()  # type: ignore[operator]
    span = abs(secs)
    text = (f"{span:.0f}s" if span < 90 else f"{span / 60:.0f}m" if span < 5400
            else f"{span / 3600:.1f}h" if span < 172800 else f"{span / 86400:.0f}d")
    return f"in {text}" if secs > 0 else f"{text} ago"


def _check_feed_names(env: Env, names: tuple[str, ...]) -> None:
    known = {f.name for f in env.feeds.feed}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown feed {', '.join(map(repr, unknown))}; known: {sorted(known)}",
                          path=env.feeds_path)


def _counts_table(counts: RunCounts) -> Table:
    t = Table(title="run", show_header=False)
    for k, v in counts.model_dump().items():
        if k != "started_at":
            t.add_row(k.replace("_", " "), str(v))
    return t


def _date(value: str | None, opt: str) -> datetime | None:
    if value is None:
        return None
    try:
        d = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a date like 2026-01-31", param_hint=opt) from e
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# evidence fetch
# ---------------------------------------------------------------------------------------------


@main.command()
@click.option("--feed", "feed_names", multiple=True, metavar="NAME",
              help="Poll this feed now, due or not (repeatable).")
@click.option("--all", "poll_all", is_flag=True, help="Poll every enabled feed, due or not.")
@env_options(listing=True)
def fetch(env: Env, feed_names: tuple[str, ...], poll_all: bool) -> None:
    """Stage 1: poll due feeds (conditional GET) and store their new entries.

    \b
    evidence fetch                 feeds whose next poll time has come
    evidence fetch --feed hf-blog  one feed now
    evidence fetch --all --json    every enabled feed, result as JSON
    """
    _check_feed_names(env, feed_names)
    with _progress(env) as progress:
        counts, results = fetch_once(env.engine, env.settings, env.feeds,
                                     feed_names=feed_names or None, force=poll_all,
                                     progress=progress)
    not_polled = _not_polled(env, feed_names, results)
    if env.as_json:
        env.emit({"counts": counts.model_dump(mode="json"),
                  "feeds": [r.model_dump(mode="json") for r in results],
                  "not_polled": not_polled})
        return
    for name, why in not_polled.items():
        env.console.print(f"{name}: not polled: {why}", markup=False, highlight=False,
                          soft_wrap=True)
    if env.quiet:
        return
    t = Table(title=f"fetch: {len(results)} feed(s) polled")
    for col in ("feed", "outcome", "HTTP", "new", "seen", "detail"):
        t.add_column(col)
    for r in results:
        t.add_row(r.feed, r.outcome, str(r.status or "-"), str(r.entries_new), str(r.entries_seen),
                  (r.detail or "")[:100])
    _stdout().print(t)
    if not results and not feed_names:
        env.console.print("no feed is due; `evidence feeds` shows when each is next polled, "
                          "`--all` polls now")


def _not_polled(env: Env, names: tuple[str, ...], results: list[Any]) -> dict[str, str]:
    """Feeds named on the command line that were not polled → why (disabled, and how to undo)."""
    polled = {r.feed for r in results}
    missing = [n for n in names if n not in polled]
    if not missing:
        return {}
    why = {}
    for h in feed_health(env.engine):
        if h["name"] in missing:
            why[h["name"]] = (f"disabled ({h['disabled_reason']}); `evidence feeds --enable "
                              f"{h['name']}` clears it" if h["disabled_reason"]
                              else "enabled = false in feeds.toml")
    return why


# ---------------------------------------------------------------------------------------------
# evidence feeds
# ---------------------------------------------------------------------------------------------


@main.command("feeds")
@click.option("--enable", "enable", metavar="NAME",
              help="Clear a feed's automatic disable (HTTP 410, repeated failures).")
@env_options(listing=True)
def feeds_cmd(env: Env, enable: str | None) -> None:
    """Feed health: state, last poll, HTTP status, errors, disabled reason, next poll."""
    sync_feeds(env.engine, env.feeds)
    if enable:
        if not enable_feed(env.engine, enable):
            raise EvidenceError(f"no feed named {enable!r}")
    now = utcnow()
    rows = feed_health(env.engine, now=now)
    if env.as_json:
        env.emit(rows)
        return
    t = Table(title=f"{len(rows)} feed(s)")
    for col in ("feed", "state", "last poll", "HTTP", "errors\nnow/all", "next poll", "entries"):
        t.add_column(col, overflow="fold")
    notes = []
    for r in rows:
        errs = f"{r['consecutive_errors']}/{r['error_count']}"
        nxt = "due" if r["due"] else _ago(r["next_poll_at"], now)
        t.add_row(r["name"], r["state"], _ago(r["last_polled_at"], now),
                  str(r["last_status"] or "-"), errs, nxt, str(r["entries"]))
        if r["disabled_reason"]:
            notes.append(f"{r['name']}: disabled: {r['disabled_reason']}")
        elif r["last_error"]:
            notes.append(f"{r['name']}: last error: {r['last_error']}")
    out = _stdout()
    out.print(t)
    for note in notes:
        out.print(note, markup=False)


# ---------------------------------------------------------------------------------------------
# evidence articles / show
# ---------------------------------------------------------------------------------------------


def _last_skip(entry_id: Any) -> Any:
    return (select(skips.c.kind, skips.c.reason, skips.c.detail)
            .where(skips.c.entry_id == entry_id).order_by(skips.c.id.desc()).limit(1))


@main.command("articles")
@click.option("--feed", "feed_name", metavar="NAME", help="Only this feed's entries.")
@click.option("--since", metavar="DATE", help="Published (or first seen) on or after DATE.")
@click.option("--until", metavar="DATE", help="Published (or first seen) before DATE.")
@click.option("--state", type=click.Choice(STATES), default="all", show_default=True,
              help="Entry state: done (an article), skipped/failed (with the reason), pending.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many rows.")
@env_options(listing=True)
def articles_cmd(env: Env, feed_name: str | None, since: str | None, until: str | None,
                 state: str, limit: int) -> None:
    """List feed entries and what became of them, newest first."""
    when = func.coalesce(entries.c.published, entries.c.created_at)
    q = (select(entries.c.id, entries.c.state, feeds.c.name.label("feed"), entries.c.title,
                entries.c.link, entries.c.published, entries.c.created_at, entries.c.article_id,
                articles.c.story_id, articles.c.extracted_from)
         .join(feeds, feeds.c.id == entries.c.feed_id)
         .outerjoin(articles, articles.c.id == entries.c.article_id))
    conds = []
    if feed_name:
        conds.append(feeds.c.name == feed_name)
    if state != "all":
        conds.append(entries.c.state == state)
    if (d := _date(since, "--since")) is not None:
        conds.append(when >= d)
    if (d := _date(until, "--until")) is not None:
        conds.append(when < d)
    if conds:
        q = q.where(and_(*conds))
    q = q.order_by(when.desc(), entries.c.id.desc()).limit(limit)
    out = []
    with env.engine.connect() as conn:
        for r in conn.execute(q):
            row = dict(r._mapping)
            row["published"] = as_utc(row["published"])
            row["created_at"] = as_utc(row["created_at"])
            failed = r.state in ("skipped", "failed")
            skip = conn.execute(_last_skip(r.id)).first() if failed else None
            row["reason"] = f"{skip.reason}: {skip.detail}" if skip else None
            out.append(row)
    if env.as_json:
        env.emit(out)
        return
    t = Table(title=f"{len(out)} entr{'y' if len(out) == 1 else 'ies'}")
    for col in ("entry", "state", "feed", "published", "article", "story", "title / reason"):
        t.add_column(col, overflow="fold")
    for r in out:
        pub = r["published"].strftime("%Y-%m-%d %H:%M") if r["published"] else "-"
        label = r["title"] or r["link"] or ""
        if r["reason"]:
            label = f"{label}\n[dim]{r['reason'][:160]}[/dim]"
        t.add_row(str(r["id"]), r["state"], r["feed"], pub, str(r["article_id"] or "-"),
                  str(r["story_id"] or "-"), label)
    _stdout().print(t)


@main.command("show")
@click.argument("item_id", type=int)
@click.option("--entry", "is_entry", is_flag=True, help="ID is an entry id, not an article id.")
@click.option("--chars", type=int, default=1500, show_default=True,
              help="Show this much of the article text (0: all).")
@env_options(listing=True)
def show_cmd(env: Env, item_id: int, is_entry: bool, chars: int) -> None:
    """Show one article (text, metadata, story, entries), or one entry with --entry."""
    with env.engine.connect() as conn:
        if is_entry:
            e = conn.execute(select(entries, feeds.c.name.label("feed"))
                             .join(feeds, feeds.c.id == entries.c.feed_id)
                             .where(entries.c.id == item_id)).first()
            if e is None:
                raise EvidenceError(f"no entry {item_id}")
            data: dict[str, Any] = {k: v for k, v in e._mapping.items()
                                    if k not in ("claimed_by", "lease_until", "claims")}
            data["skips"] = [dict(s._mapping) for s in conn.execute(
                select(skips.c.kind, skips.c.stage, skips.c.reason, skips.c.detail,
                       skips.c.created_at).where(skips.c.entry_id == item_id)
                .order_by(skips.c.id))]
            if e.article_id is None or env.as_json:
                if env.as_json:
                    env.emit(data)
                else:
                    out = _stdout()
                    for k, v in data.items():
                        out.print(f"{k}: {v}", markup=False, highlight=False)
                return
            item_id = e.article_id
        a = conn.execute(select(articles, feeds.c.name.label("feed"))
                         .outerjoin(feeds, feeds.c.id == articles.c.feed_id)
                         .where(articles.c.id == item_id)).first()
        if a is None:
            raise EvidenceError(f"no article {item_id}")
        siblings = [dict(s._mapping) for s in conn.execute(
            select(articles.c.id, articles.c.title, articles.c.url)
            .where(articles.c.story_id == a.story_id, articles.c.id != a.id)
            .order_by(articles.c.id))] if a.story_id is not None else []
        via = [dict(s._mapping) for s in conn.execute(
            select(entries.c.id, feeds.c.name.label("feed"), entries.c.guid)
            .join(feeds, feeds.c.id == entries.c.feed_id).where(entries.c.article_id == a.id))]
        per_thesis = label_history(conn, a.id)
    data = {k: v for k, v in a._mapping.items() if k != "minhash"}
    data.update(published=as_utc(a.published), created_at=as_utc(a.created_at),
                story_siblings=siblings, entries=via, labels=per_thesis)
    if env.as_json:
        env.emit(data)
        return
    c = _stdout()
    c.print(f"[bold]{a.title or '(no title)'}[/bold]", highlight=False)
    for k in ("id", "url", "canonical_url", "feed", "author", "published", "site_name", "language",
              "extracted_from", "story_id", "text_sha256"):
        c.print(f"  {k}: {data.get(k)}", highlight=False, markup=False)
    if siblings:
        c.print(f"  same story: {', '.join(str(s['id']) for s in siblings)}", highlight=False)
    text = a.text if chars == 0 else a.text[:chars] + ("…" if len(a.text) > chars else "")
    c.print("")
    c.print(text, highlight=False, markup=False)
    for h in per_thesis:
        _print_thesis_label(c, h)


def _print_thesis_label(c: Any, h: dict[str, Any]) -> None:
    """One thesis's pair state, label, quotes and LLM calls, as `evidence show` prints them."""
    c.print("")
    score = "-" if h["route_score"] is None else f"{h['route_score']:.3f}"
    c.print(f"[bold]{h['thesis']}[/bold]  pair {h['pair_id']}: {h['state']} (route score {score})",
            highlight=False)
    if h["error_type"]:
        c.print(f"  error: {h['error_type']}: {h['error_detail']}", markup=False, highlight=False)
    lab = h["label"]
    if lab is not None:
        fields = ("relevant={relevant} type={evidence_type} direction={direction} "
                  "strength={strength} trigger={trigger} confidence={confidence:.2f} "
                  "review={review_state}").format(**lab)
        c.print(f"  label {lab['id']}: {fields}", markup=False, highlight=False)
        c.print(f"  rationale: {lab['rationale']}", markup=False, highlight=False)
        for q in lab["quotes"]:
            c.print(f'  quote: "{q}"', markup=False, highlight=False)
    for call in h["calls"]:
        err = f" error={call['error_type']}" if call["error_type"] else ""
        c.print(f"  call {call['id']} attempt {call['attempt']}: {call['backend']}:{call['model']} "
                f"{call['tokens_in']}+{call['tokens_out']} tok ${call['cost_usd']:.4f} "
                f"{call['latency_ms'] / 1000:.1f}s{err}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------
# evidence run
# ---------------------------------------------------------------------------------------------


@main.command("run")
@click.option("--feed", "feed_names", multiple=True, metavar="NAME",
              help="Poll only this feed (repeatable); pending entries are processed regardless.")
@click.option("--all", "poll_all", is_flag=True, help="Poll every enabled feed, due or not.")
@click.option("--model", "model_spec", metavar="SPEC",
              help="Labeler: combined (default: the encoder + the LLM from --llm, per field), "
                   "local, local:PATH.gguf, openai:MODEL, encoder, or none to stop after routing.")
@click.option("--llm", "llm_spec", metavar="SPEC", help="The combined labeler's LLM: local, "
              "local:PATH.gguf, openai:MODEL (default: env EVIDENCE_MODEL, else local).")
@click.option("--label-limit", type=click.IntRange(min=0), metavar="N",
              help="Label at most N routed pairs this run; the rest stay pending.")
@click.option("--budget", "budget_usd", type=click.FloatRange(min=0), metavar="USD",
              help="Stop labeling before spending more than this; the rest stay pending.")
@env_options(listing=True)
def run_cmd(env: Env, feed_names: tuple[str, ...], poll_all: bool, model_spec: str | None,
            llm_spec: str | None, label_limit: int | None, budget_usd: float | None) -> None:
    """Run every stage once: fetch → extract → dedupe → route → label (queued for review)."""
    _check_feed_names(env, feed_names)
    backend = None
    if model_spec != "none":
        from classifier.cli.common import make_backend
        backend = make_backend(env.settings.label, model_spec, llm_spec, env.engine)
    with _progress(env) as progress:
        counts = run_once(env.engine, env.settings, env.feeds, env.theses, backend=backend,
                          feed_names=feed_names or None, force=poll_all, progress=progress,
                          label_limit=label_limit, budget_usd=budget_usd)
    if env.as_json:
        env.emit(counts.model_dump(mode="json"))
    elif not env.quiet:
        _stdout().print(_counts_table(counts))

