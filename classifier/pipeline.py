"""The order of the stages; nothing else. `evidence run` calls `run_once`.

    0  feeds.toml → feeds table (sync), a runs row
    1  fetch    due feeds → entries (state 'pending')                          fetch.py
    2  extract  pending entries → page fetched by net.py → Article | Skip       extract.py
    3  dedupe   Article → stored article in a story | Skip(duplicate)           dedupe.py
    4  route    new articles × watched theses → pairs 'pending' | 'skipped'      route.py
    5  label    (issue: label.py)
    the runs row gets the counts

Every entry leaves stage 2–3 as 'done', 'skipped' or 'failed', with a skips row for the last two.
Slow work (HTTP, trafilatura) runs in a thread pool without a transaction; each result is then
stored from the calling thread in its own short write transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select, update

from classifier import alerts
from classifier.config import ExtractSettings, FeedsFile, Settings, ThesesFile
from classifier.errors import EvidenceError, FetchError
from classifier.fetch import PollResult, due_feeds, poll_feed, sync_feeds
from classifier.net import Client
from classifier.records import Article, FeedEntry, Record, RunCounts, Skip, SkipReason, Stage
from classifier.route import Router, route_new_articles
from classifier.store import utcnow, write
from classifier.store.tables import entries, feeds, runs, skips

#: progress(stage, done, total): called as items finish; the CLI draws a bar with it.
Progress = Callable[[str, int, int], None]

PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"
DUPLICATES = {SkipReason.DUPLICATE_URL, SkipReason.DUPLICATE_GUID, SkipReason.DUPLICATE_TEXT}


class EntryFailure(Record):
    """Stage 2–3 could not finish an entry: a stable reason code and what happened."""

    stage: Stage
    reason: str
    detail: str = ""


EntryResult = Article | Skip | EntryFailure


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def start_run(engine: Engine, command: str) -> int:
    """Command name → id of a new runs row in state 'running'."""
    with write(engine) as conn:
        return int(conn.execute(insert(runs).values(
            command=command, started_at=utcnow(), status="running", counts={})
        ).inserted_primary_key[0])


def finish_run(engine: Engine, run_id: int, counts: RunCounts, *, status: str = "done") -> None:
    """Run id + counts → the runs row closed with its counts."""
    with write(engine) as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(
            finished_at=utcnow(), status=status, counts=counts.model_dump(mode="json")))


# ---------------------------------------------------------------------------------------------
# Stage 1 over all due feeds
# ---------------------------------------------------------------------------------------------


def fetch_feeds(engine: Engine, client: Client, settings: Settings, *,
                feed_names: Sequence[str] | None = None, force: bool = False,
                run_id: int | None = None, progress: Progress | None = None) -> list[PollResult]:
    """Due feeds (or the named ones, or all with force) → a PollResult each, polled in parallel."""
    due = due_feeds(engine, names=feed_names, force=force)
    results: list[PollResult] = []
    if progress:
        progress("fetch", 0, len(due))
    with ThreadPoolExecutor(max_workers=max(1, settings.fetch.concurrency)) as pool:
        futures = [pool.submit(poll_feed, engine, client, row, settings, run_id=run_id)
                   for row in due]
        for fut in as_completed(futures):
            results.append(fut.result())
            if progress:
                progress("fetch", len(results), len(due))
    return sorted(results, key=lambda r: r.feed)


# ---------------------------------------------------------------------------------------------
# Stages 2–3 for one entry (also the unit of work for `evidence worker`)
# ---------------------------------------------------------------------------------------------


def entry_record(row: Any, feed_name: str) -> FeedEntry:
    """entries row (+ its feed's name) → the FeedEntry record stage 2 takes."""
    return FeedEntry(feed=feed_name, guid=row.guid, link=row.link, title=row.title or "",
                     summary=row.summary or "", author=row.author, published=row.published)


def work_entry(client: Client, entry: FeedEntry, settings: ExtractSettings) -> EntryResult:
    """FeedEntry → Article | Skip | EntryFailure: fetch its page (else the summary), extract."""
    from classifier.extract import extract  # stage 2 (imported late: trafilatura is heavy)

    page, page_error = None, None
    if not entry.link:
        page_error = "the entry has no link"
    else:
        try:
            page = client.get(entry.link, accept=PAGE_ACCEPT)
        except FetchError as e:
            page_error = f"{e.reason}: {e}"
    try:
        return extract(entry, page, settings=settings, page_error=page_error)
    except EvidenceError as e:
        return EntryFailure(stage=Stage.EXTRACT, reason=type(e).__name__, detail=str(e))


def store_entry(conn: Connection, entry_id: int, feed_id: int, result: EntryResult, *,
                url: str | None = None, run_id: int | None = None) -> tuple[str, Any]:
    """Entry id + stage 2 result → (final state, StoredArticle | Skip | EntryFailure), written."""
    from classifier.dedupe import store_article  # stage 3

    outcome: Any = result
    if isinstance(result, Article):
        outcome = store_article(conn, result, feed_id=feed_id)
    if isinstance(outcome, Skip | EntryFailure):
        kind = "skip" if isinstance(outcome, Skip) else "failure"
        reason = outcome.reason.value if isinstance(outcome, Skip) else outcome.reason
        conn.execute(insert(skips).values(
            kind=kind, stage=outcome.stage.value, reason=reason, detail=outcome.detail[:4000],
            feed_id=feed_id, entry_id=entry_id, url=url, run_id=run_id, created_at=utcnow()))
        state = "skipped" if kind == "skip" else "failed"
        conn.execute(update(entries).where(entries.c.id == entry_id).values(state=state))
        return state, outcome
    conn.execute(update(entries).where(entries.c.id == entry_id).values(
        state="done", article_id=outcome.article_id))
    return "done", outcome


def pending_entries(engine: Engine, *, limit: int | None = None,
                    now: datetime | None = None) -> list[tuple[Any, str]]:
    """→ (entries row, feed name) for entries in state 'pending' that no worker holds."""
    now = now or utcnow()
    q = (select(entries, feeds.c.name.label("feed_name"))
         .join(feeds, feeds.c.id == entries.c.feed_id)
         .where(entries.c.state == "pending",
                or_(entries.c.lease_until.is_(None), entries.c.lease_until < now))
         .order_by(entries.c.id))
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [(r, r.feed_name) for r in conn.execute(q)]


def ingest_entries(engine: Engine, client: Client, settings: Settings, *,
                   run_id: int | None = None, progress: Progress | None = None,
                   limit: int | None = None) -> dict[str, int]:
    """Pending entries → articles; → counts {done, skipped, failed, duplicates, stories_new}."""
    todo = pending_entries(engine, limit=limit)
    counts = dict.fromkeys(("done", "skipped", "failed", "duplicates", "stories_new"), 0)
    if progress:
        progress("extract", 0, len(todo))
    with ThreadPoolExecutor(max_workers=max(1, settings.fetch.concurrency)) as pool:
        futures = [(row, pool.submit(work_entry, client, entry_record(row, name), settings.extract))
                   for row, name in todo]
        # Stored in entry order, not completion order: the first-seen entry of a duplicate pair
        # owns the article, run after run.
        for n, (row, fut) in enumerate(futures, 1):
            try:
                result: EntryResult = fut.result()
            except Exception as e:  # noqa: BLE001  a crash on one page must not lose the others
                result = EntryFailure(stage=Stage.EXTRACT, reason="crash",
                                      detail=f"{type(e).__name__}: {e}")
            with write(engine) as conn:
                state, outcome = store_entry(conn, row.id, row.feed_id, result, url=row.link,
                                             run_id=run_id)
            counts[state] += 1
            if isinstance(outcome, Skip) and outcome.reason in DUPLICATES:
                counts["duplicates"] += 1
            elif state == "done" and outcome.new_story:
                counts["stories_new"] += 1
            if progress:
                progress("extract", n, len(todo))
    return counts


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def fetch_counts(results: Iterable[PollResult]) -> dict[str, int]:
    """PollResults → the stage 1 fields of RunCounts."""
    rs = list(results)
    return {"feeds_polled": len(rs),
            "feeds_not_modified": sum(r.outcome == "not_modified" for r in rs),
            "feeds_failed": sum(r.outcome in ("failed", "skipped", "disabled") for r in rs),
            "entries_new": sum(r.entries_new for r in rs)}


def run_once(engine: Engine, settings: Settings, feeds: FeedsFile, theses: ThesesFile, *,
             backend: Any = None, feed_names: Sequence[str] | None = None, force: bool = False,
             progress: Progress | None = None, label_limit: int | None = None,
             budget_usd: float | None = None, router: Any = None) -> RunCounts:
    """Config + database → every stage that exists, once, in order → what it did (RunCounts)."""
    started = utcnow()
    sync_feeds(engine, feeds)  # 0  feeds.toml → feeds table
    run_id = start_run(engine, "run")
    counts: dict[str, Any] = {"started_at": started}
    try:
        with Client(settings.net) as client:
            # 1  fetch: due feeds → new entries
            polled = fetch_feeds(engine, client, settings, feed_names=feed_names, force=force,
                                 run_id=run_id, progress=progress)
            counts.update(fetch_counts(polled))
            # 2  extract + 3 dedupe: pending entries → articles in stories
            ing = ingest_entries(engine, client, settings, run_id=run_id, progress=progress)
            counts.update(articles_new=ing["done"], skipped=ing["skipped"] - ing["duplicates"],
                          failed=ing["failed"], duplicates=ing["duplicates"],
                          stories_new=ing["stories_new"])
        # 4  route: new articles × theses their feed watches → pairs 'pending' | 'skipped'
        routed, unrouted = route_new_articles(engine, theses, feeds, run_id=run_id,
                                              router=router or Router(settings.route),
                                              progress=progress)
        counts.update(pairs_routed=routed, pairs_skipped=unrouted)
        # 5  label: pending pairs → labels queued for review, or pair 'failed' (no backend: later)
        if backend is not None:
            from classifier.label import label_pending
            lab = label_pending(engine, theses, backend, limit=label_limit, budget_usd=budget_usd,
                                settings=settings.label, progress=progress)
            counts.update(labels_new=lab.labeled, labels_failed=lab.failed,
                          labels_llm_skipped=lab.llm_skipped)
    except BaseException:
        finish_run(engine, run_id, RunCounts(**counts), status="failed")
        raise
    result = RunCounts(**counts)
    finish_run(engine, run_id, result)
    # trigger alerts: events stage 5 wrote to the outbox → signed webhooks (failures retried later)
    alerts.deliver_pending(engine, feeds.alert)
    return result


def fetch_once(engine: Engine, settings: Settings, feeds: FeedsFile, *,
               feed_names: Sequence[str] | None = None, force: bool = False,
               progress: Progress | None = None) -> tuple[RunCounts, list[PollResult]]:
    """Config + database → stage 1 only (`evidence fetch`) → counts and one result per feed."""
    started = utcnow()
    sync_feeds(engine, feeds)
    run_id = start_run(engine, "fetch")
    try:
        with Client(settings.net) as client:
            polled = fetch_feeds(engine, client, settings, feed_names=feed_names, force=force,
                                 run_id=run_id, progress=progress)
    except BaseException:
        finish_run(engine, run_id, RunCounts(started_at=started), status="failed")
        raise
    result = RunCounts(started_at=started, **fetch_counts(polled))
    finish_run(engine, run_id, result)
    return result, polled
