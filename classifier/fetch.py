"""Stage 1, fetch: poll a feed with a conditional GET, parse its bytes, store new entries.

    feeds.toml ─sync_feeds─▶ feeds rows ─due_feeds─▶ poll_feed(one feed):
        fetch_feed   (slow, no transaction)  Client.get(url, etag, last_modified) ─▶ parse_feed
        store_poll   (one write transaction) new entries (state 'pending'), the feed's state,
                                              a skips row for anything that went wrong

What a poll leaves in the feeds row (shown by `evidence feeds`):
    200 + feed      validators stored verbatim, errors reset, next poll after poll_minutes;
                    a malformed feed keeps what feedparser salvaged + skips(failure, malformed_feed)
    304             nothing parsed, errors reset, next poll after poll_minutes
    empty / not a feed (HTML, garbage)   skips(skip, empty_body|not_a_feed), counted as an error
    410             disabled: "HTTP 410 Gone"
    429 / 503       next poll after Retry-After (capped), counted as an error
    any other error next poll after backoff_base * 2^(n-1) minutes (capped); after
                    disable_after_errors consecutive errors the feed is disabled with the reason
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import feedparser
from sqlalchemy import Connection, Engine, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from classifier.config import FeedsFile, FetchSettings, Settings
from classifier.errors import FetchError, HTTPStatusError
from classifier.net import Client
from classifier.records import FeedEntry, Page, Record, Skip, SkipReason, Stage
from classifier.store import utcnow, write
from classifier.store.engine import as_utc
from classifier.store.tables import entries, feeds, skips

FEED_ACCEPT = ("application/rss+xml, application/atom+xml, application/feed+json;q=0.9, "
               "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5")

_parses = 0
_parses_lock = threading.Lock()


def parse_count() -> int:
    """→ how many feed bodies this process has handed to feedparser (re-poll tests read it)."""
    return _parses


class ParsedFeed(Record):
    """What feedparser salvaged from one body, and the error it met, if any."""

    entries: tuple[FeedEntry, ...] = ()
    error: str | None = None
    version: str = ""
    title: str = ""


class PollOutcome(Record):
    """The slow half of a poll (HTTP + parse): what `store_poll` needs to write."""

    feed_id: int
    page: Page | None = None
    parsed: ParsedFeed | None = None
    skip: Skip | None = None
    error: str | None = None
    error_reason: str | None = None
    status: int | None = None
    retry_after: float | None = None


class PollResult(Record):
    """What one poll did: outcome ok|not_modified|skipped|failed|disabled, new entry count."""

    feed: str
    outcome: str
    status: int | None = None
    entries_seen: int = 0
    entries_new: int = 0
    parsed: bool = False
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _clean(value: Any) -> str:
    # PostgreSQL text cannot hold NUL; feeds do contain it now and then.
    return str(value or "").replace("\x00", "").strip()


def _when(entry: Mapping[str, Any]) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        t = entry.get(key)
        if t:
            try:
                return datetime(*t[:6], tzinfo=UTC)
            except (TypeError, ValueError):
                continue
    return None


def _guid(entry: Mapping[str, Any], link: str, title: str, summary: str) -> str:
    guid = _clean(entry.get("id")) or link
    if guid:
        return guid
    # No id and no link: a content hash keeps re-polls from adding the same entry again.
    return "sha256:" + hashlib.sha256(f"{title}\n{summary}".encode()).hexdigest()


def parse_feed(body: bytes, *, feed: str, base_url: str, content_type: str = "") -> ParsedFeed:
    """Feed body bytes (+ its URL and Content-Type) → ParsedFeed; never raises, never fetches."""
    global _parses
    with _parses_lock:
        _parses += 1
    # No content-location: feedparser would resolve entry ids against it too (and differently in
    # its loose mode), and a GUID must not change with the parser's mood. Links are joined below.
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    try:
        # A file object, never bytes or str: feedparser treats a string as a URL or a *file
        # name* and would fetch or open it (a body reading "/etc/passwd" must stay a body).
        d = feedparser.parse(io.BytesIO(body), response_headers=headers,
                             resolve_relative_uris=True, sanitize_html=True)
    except Exception as e:  # noqa: BLE001  feedparser on hostile bytes: record, never crash a run
        return ParsedFeed(error=f"feedparser crashed: {type(e).__name__}: {e}")
    out: list[FeedEntry] = []
    seen: set[str] = set()
    for e in d.get("entries", []):
        link = _clean(e.get("link"))
        if link and base_url:
            link = urljoin(base_url, link)
        title = _clean(e.get("title"))
        summary = _clean(e.get("summary"))
        guid = _guid(e, link, title, summary)
        if guid in seen:
            continue
        seen.add(guid)
        out.append(FeedEntry(feed=feed, guid=guid, link=link or None, title=title, summary=summary,
                             author=_clean(e.get("author")) or None, published=_when(e)))
    error = None
    if d.get("bozo"):
        exc = d.get("bozo_exception")
        error = f"{type(exc).__name__}: {exc}" if exc else "malformed feed"
    return ParsedFeed(entries=tuple(out), error=error, version=d.get("version") or "",
                      title=_clean(d.get("feed", {}).get("title")))


# ---------------------------------------------------------------------------------------------
# feeds.toml → feeds table
# ---------------------------------------------------------------------------------------------


def sync_feeds(engine: Engine, feeds_file: FeedsFile) -> dict[str, int]:
    """FeedsFile → feeds rows upserted by name; → counts {added, updated, removed}."""
    now = utcnow()
    counts = {"added": 0, "updated": 0, "removed": 0}
    if not feeds_file.feed:
        # A missing or empty feeds.toml (a command run from the wrong directory) must not
        # switch every feed off; `enabled = false` is how a feed is stopped.
        return counts
    with write(engine) as conn:
        rows = {r.name: r for r in conn.execute(select(feeds))}
        for f in feeds_file.feed:
            want = {"url": f.url, "tags": list(f.tags), "poll_minutes": f.poll_minutes,
                    "enabled": f.enabled}
            row = rows.get(f.name)
            if row is None:
                conn.execute(insert(feeds).values(name=f.name, created_at=now, **want))
                counts["added"] += 1
                continue
            changes = {k: v for k, v in want.items() if getattr(row, k) != v}
            if "url" in changes:
                # A new URL is a new feed as far as the server knows: start its state afresh.
                changes.update(etag=None, last_modified=None, consecutive_errors=0,
                               disabled_reason=None, next_poll_at=None, last_error=None)
            if changes:
                conn.execute(update(feeds).where(feeds.c.id == row.id).values(**changes))
                counts["updated"] += 1
        names = {f.name for f in feeds_file.feed}
        for name, row in rows.items():
            if name not in names and row.enabled:
                # Kept (its entries and articles point at it) but no longer polled.
                conn.execute(update(feeds).where(feeds.c.id == row.id).values(enabled=False))
                counts["removed"] += 1
    return counts


def due_feeds(engine: Engine, *, names: Sequence[str] | None = None, force: bool = False,
              now: datetime | None = None) -> list[Any]:
    """→ feed rows to poll: enabled, not disabled, due (all of them with force; named ones only)."""
    now = now or utcnow()
    q = select(feeds).where(feeds.c.enabled.is_(True), feeds.c.disabled_reason.is_(None),
                            # a feed a worker holds under a live lease is that worker's to poll
                            or_(feeds.c.lease_until.is_(None), feeds.c.lease_until <= now))
    if names:
        q = q.where(feeds.c.name.in_(list(names)))
    elif not force:
        q = q.where(or_(feeds.c.next_poll_at.is_(None), feeds.c.next_poll_at <= now))
    with engine.connect() as conn:
        return list(conn.execute(q.order_by(feeds.c.id)))


# ---------------------------------------------------------------------------------------------
# One poll
# ---------------------------------------------------------------------------------------------


def fetch_feed(client: Client, feed: Any) -> PollOutcome:
    """Feed row → PollOutcome (HTTP + parse, no database); fetch errors become data here."""
    try:
        page = client.get(feed.url, etag=feed.etag, last_modified=feed.last_modified,
                          accept=FEED_ACCEPT)
    except HTTPStatusError as e:
        return PollOutcome(feed_id=feed.id, error=str(e), error_reason=f"http_{e.status}",
                           status=e.status, retry_after=e.retry_after)
    except FetchError as e:
        return PollOutcome(feed_id=feed.id, error=str(e), error_reason=e.reason)
    if page.status == 304:
        return PollOutcome(feed_id=feed.id, page=page, status=304)
    if not page.body.strip():
        return PollOutcome(feed_id=feed.id, page=page, status=page.status, skip=Skip(
            stage=Stage.FETCH, reason=SkipReason.EMPTY_BODY,
            detail=f"HTTP {page.status} with an empty body"))
    parsed = parse_feed(page.body, feed=feed.name, base_url=page.final_url,
                        content_type=page.content_type)
    if not parsed.entries and not parsed.version:
        return PollOutcome(feed_id=feed.id, page=page, status=page.status, parsed=parsed, skip=Skip(
            stage=Stage.FETCH, reason=SkipReason.NOT_A_FEED,
            detail=f"{page.content_type or 'no content-type'}, {len(page.body)} bytes: "
                   f"{parsed.error or 'no feed found'}"))
    return PollOutcome(feed_id=feed.id, page=page, status=page.status, parsed=parsed)


def _backoff(errors: int, s: FetchSettings) -> timedelta:
    minutes = min(s.backoff_base_minutes * 2 ** max(errors - 1, 0), s.backoff_max_minutes)
    return timedelta(minutes=minutes)


def _skip_row(conn: Connection, *, kind: str, reason: str, detail: str, feed: Any, now: datetime,
              run_id: int | None) -> None:
    conn.execute(insert(skips).values(kind=kind, stage=Stage.FETCH.value, reason=reason,
                                      detail=detail[:4000], feed_id=feed.id, url=feed.url,
                                      run_id=run_id, created_at=now))


def insert_entries(conn: Connection, feed_id: int, items: Sequence[FeedEntry],
                   now: datetime) -> int:
    """Entries of one feed → how many were new (unique (feed_id, guid): a re-poll adds none)."""
    if not items:
        return 0
    guids = [e.guid for e in items]
    known: set[str] = set()
    for i in range(0, len(guids), 500):  # stay under SQLite's bound-parameter limit
        known.update(conn.execute(select(entries.c.guid).where(
            entries.c.feed_id == feed_id, entries.c.guid.in_(guids[i:i + 500]))).scalars())
    new = [e for e in items if e.guid not in known]
    for e in new:
        # A savepoint per row: a concurrent poller of the same feed (PostgreSQL workers) may
        # have inserted it since we looked; the unique constraint decides, we skip it.
        try:
            with conn.begin_nested():
                conn.execute(insert(entries).values(
                    feed_id=feed_id, guid=e.guid, link=e.link, title=e.title, summary=e.summary,
                    author=e.author, published=e.published, state="pending", created_at=now))
        except IntegrityError:
            known.add(e.guid)
    return len([e for e in new if e.guid not in known])


def store_poll(conn: Connection, feed: Any, outcome: PollOutcome, settings: FetchSettings, *,
               now: datetime | None = None, run_id: int | None = None) -> PollResult:
    """Feed row + PollOutcome → entries and feed state written in `conn`'s transaction."""
    now = now or utcnow()
    poll_every = timedelta(minutes=feed.poll_minutes)
    base = {"last_polled_at": now, "last_status": outcome.status}
    if outcome.error is None and outcome.skip is None:
        ok = {**base, "consecutive_errors": 0, "next_poll_at": now + poll_every, "last_error": None}
        if outcome.status == 304:
            conn.execute(update(feeds).where(feeds.c.id == feed.id).values(**ok))
            return PollResult(feed=feed.name, outcome="not_modified", status=304)
        page, parsed = outcome.page, outcome.parsed
        assert page is not None and parsed is not None
        new = insert_entries(conn, feed.id, parsed.entries, now)
        if parsed.error:
            ok["last_error"] = f"malformed feed, {len(parsed.entries)} entries kept: {parsed.error}"
            _skip_row(conn, kind="failure", reason="malformed_feed", detail=ok["last_error"],
                      feed=feed, now=now, run_id=run_id)
        conn.execute(update(feeds).where(feeds.c.id == feed.id).values(
            etag=page.etag, last_modified=page.last_modified, **ok))
        return PollResult(feed=feed.name, outcome="ok", status=outcome.status, parsed=True,
                          entries_seen=len(parsed.entries), entries_new=new,
                          detail=parsed.error or "")

    # Everything below is an error of some kind: count it, back off, maybe disable.
    errors = (feed.consecutive_errors or 0) + 1
    values: dict[str, Any] = {**base, "consecutive_errors": errors,
                              "error_count": (feed.error_count or 0) + 1}
    if outcome.skip is not None:
        detail = outcome.skip.detail
        values["last_error"] = f"{outcome.skip.reason.value}: {detail}"
        _skip_row(conn, kind="skip", reason=outcome.skip.reason.value, detail=detail, feed=feed,
                  now=now, run_id=run_id)
    else:
        detail = outcome.error or "fetch failed"
        values["last_error"] = detail
        _skip_row(conn, kind="failure", reason=outcome.error_reason or "fetch_error",
                  detail=detail, feed=feed, now=now, run_id=run_id)
    result = "skipped" if outcome.skip is not None else "failed"
    if outcome.status == 410:
        values.update(disabled_reason="HTTP 410 Gone: the feed was removed", next_poll_at=None)
        result = "disabled"
    elif outcome.status in (429, 503) and outcome.retry_after is not None:
        wait = min(outcome.retry_after, settings.max_retry_after_s)
        values["next_poll_at"] = now + timedelta(seconds=wait)
    else:
        values["next_poll_at"] = now + _backoff(errors, settings)
    if result != "disabled" and errors >= settings.disable_after_errors:
        reason = f"{errors} consecutive failures; last: {values['last_error']}"
        values.update(disabled_reason=reason, next_poll_at=None)
        result = "disabled"
    conn.execute(update(feeds).where(feeds.c.id == feed.id).values(**values))
    return PollResult(feed=feed.name, outcome=result, status=outcome.status,
                      parsed=outcome.parsed is not None, detail=values["last_error"])


def poll_feed(engine: Engine, client: Client, feed: Any, settings: Settings, *,
              run_id: int | None = None) -> PollResult:
    """Feed row → PollResult: fetch and parse, then store entries and feed state in one write."""
    outcome = fetch_feed(client, feed)
    with write(engine) as conn:
        # Re-read the row inside the write: another poller may have moved its counters.
        fresh = conn.execute(select(feeds).where(feeds.c.id == feed.id)).one()
        return store_poll(conn, fresh, outcome, settings.fetch, run_id=run_id)


def feed_health(engine: Engine, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """→ one dict per feed row: status, last poll, errors, disabled reason, next poll, entries."""
    now = now or utcnow()
    with engine.connect() as conn:
        counts = dict(conn.execute(select(entries.c.feed_id, func.count())
                                   .group_by(entries.c.feed_id)).all())
        rows = list(conn.execute(select(feeds).order_by(feeds.c.name)))
    out = []
    for r in rows:
        nxt = as_utc(r.next_poll_at)
        if not r.enabled:
            state = "disabled in feeds.toml"
        elif r.disabled_reason:
            state = "disabled"
        elif r.last_polled_at is None:
            state = "new"
        elif r.consecutive_errors:
            state = "failing"
        else:
            state = "ok"
        out.append({
            "name": r.name, "url": r.url, "state": state,
            "last_polled_at": as_utc(r.last_polled_at),
            "last_status": r.last_status, "last_error": r.last_error,
            "consecutive_errors": r.consecutive_errors, "error_count": r.error_count,
            "disabled_reason": r.disabled_reason,
            "next_poll_at": nxt if r.enabled and not r.disabled_reason else None,
            "due": bool(r.enabled and not r.disabled_reason and (nxt is None or nxt <= now)),
            "entries": counts.get(r.id, 0), "etag": r.etag, "last_modified": r.last_modified,
        })
    return out


def enable_feed(engine: Engine, name: str) -> bool:
    """Feed name → clear a runtime disable (410, repeated failures); False if no such feed."""
    with write(engine) as conn:
        res = conn.execute(update(feeds).where(feeds.c.name == name).values(
            disabled_reason=None, consecutive_errors=0, next_poll_at=None))
        return bool(res.rowcount)


__all__ = ["ParsedFeed", "PollOutcome", "PollResult", "parse_feed", "sync_feeds", "due_feeds",
           "fetch_feed", "store_poll", "poll_feed", "insert_entries", "feed_health",
           "enable_feed", "parse_count"]
