"""run_once end to end on a local server: real pages from the corpus, faults, a re-run."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from classifier.config import FeedConfig, FeedsFile, NetSettings, Settings, ThesesFile
from classifier.fetch import parse_count
from classifier.pipeline import run_once
from classifier.records import ExtractedFrom
from classifier.store.tables import articles, entries, runs, skips
from tests.faultserver import FaultServer, fault_server  # noqa: F401  (fixture)

SETTINGS = Settings(net=NetSettings(allow_private_networks=True, deadline_s=3.0,
                                    connect_timeout_s=2.0))
LONG_SUMMARY = ("The regulator said on Tuesday that the review of the merger would continue "
                "into the spring, citing the volume of submissions from competitors and "
                "consumer groups, and that no decision should be expected before April. ") * 2


def pages(corpora: Path, n: int) -> list[bytes]:
    files = sorted((corpora / "article-extraction-benchmark" / "html").glob("*.html.gz"))
    return [gzip.decompress(p.read_bytes()) for p in files[:n]]


def item(guid: str, link: str, title: str, summary: str = "short") -> str:
    return (f"<item><guid>{guid}</guid><title>{title}</title><link>{link}</link>"
            f"<description>{summary}</description></item>")


def feed(*items: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
            + "".join(items) + "</channel></rss>")


@pytest.fixture
def stream(fault_server: FaultServer, corpora: Path) -> tuple[FaultServer, FeedsFile]:
    s = fault_server
    p1, p2 = pages(corpora, 2)
    s.add("/p1.html", p1, content_type="text/html; charset=utf-8")
    s.add("/p2.html", p2, content_type="text/html; charset=utf-8")
    s.add("/a.xml", feed(
        item("a1", s.url("/p1.html"), "Page one"),
        item("a2", s.url("/p2.html"), "Page two"),
        item("a3", s.url("/missing.html"), "Gone page", LONG_SUMMARY),  # 404: summary stands in
        item("a4", s.url("/hang"), "Hanging page", "too short to stand in"),  # deadline, skip
    ), etag='"a-v1"')
    # a second feed syndicating page one under a tracking-parameter URL: a duplicate
    s.add("/b.xml", feed(item("b1", s.url("/p1.html") + "?utm_source=rss", "Page one again")),
          last_modified="Mon, 06 Jan 2025 10:00:00 GMT")
    s.add("/gone.xml", "", status=410)
    feeds = FeedsFile(feed=[FeedConfig(name="a", url=s.url("/a.xml")),
                            FeedConfig(name="b", url=s.url("/b.xml")),
                            FeedConfig(name="gone", url=s.url("/gone.xml")),
                            FeedConfig(name="bomb", url=s.url("/gzip-bomb"))])
    return s, feeds


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as c:
        return dict(c.execute(select(entries.c.guid, entries.c.state)).all())


def test_run_once_ends_every_entry_in_a_stored_state(engine: Engine, stream) -> None:  # type: ignore[no-untyped-def]
    server, feeds = stream
    seen: list[tuple[str, int, int]] = []
    counts = run_once(engine, SETTINGS, feeds, ThesesFile(),
                      progress=lambda stage, done, total: seen.append((stage, done, total)))

    st = states(engine)
    # p1 arrives twice (feeds a and b are polled in parallel): whichever entry came first owns it
    assert sorted([st.pop("a1"), st.pop("b1")]) == ["done", "skipped"]
    assert st == {"a2": "done", "a3": "done", "a4": "skipped"}
    assert (counts.feeds_polled, counts.feeds_failed, counts.entries_new) == (4, 2, 5)
    assert (counts.articles_new, counts.duplicates, counts.skipped, counts.failed) == (3, 1, 1, 0)
    assert ("fetch", 4, 4) in seen and ("extract", 5, 5) in seen
    with engine.connect() as c:
        arts = {r.title: r for r in c.execute(select(articles))}
        skipped = list(c.execute(select(skips)))
        reasons = sorted((r.stage, r.reason) for r in skipped)
        run = c.execute(select(runs)).one()
    fallback = [a for a in arts.values() if a.extracted_from == ExtractedFrom.SUMMARY.value]
    assert len(fallback) == 1 and "regulator" in fallback[0].text
    assert all(len(a.text) > 200 for a in arts.values())
    assert reasons == sorted([("dedupe", "duplicate_url"), ("extract", "page_unavailable"),
                              ("fetch", "http_410"), ("fetch", "too_large")])
    # the hanging page ended at the deadline and its too-short summary could not stand in
    assert "deadline" in next(r.detail for r in skipped if r.reason == "page_unavailable")
    assert run.status == "done" and run.counts["articles_new"] == 3

    # A second run over the unchanged stream: conditional GETs, nothing parsed, no new rows.
    parses = parse_count()
    with engine.connect() as c:
        before = {t.name: c.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (entries, articles, skips)}
    again = run_once(engine, SETTINGS, feeds, ThesesFile(), force=True)
    assert parse_count() == parses
    # "gone" is disabled, so three feeds were polled: two 304s and the bomb again
    assert (again.feeds_polled, again.feeds_not_modified, again.entries_new) == (3, 2, 0)
    with engine.connect() as c:
        after = {t.name: c.execute(select(func.count()).select_from(t)).scalar_one()
                 for t in (entries, articles, skips)}
    assert after == {**before, "skips": before["skips"] + 1}  # the bomb failed once more


def test_one_run_over_every_fault_goes_on(engine: Engine, fault_server: FaultServer,
                                          corpora: Path) -> None:
    """All stage 1 faults in one run: each feed ends in its documented state, the good one works."""
    s = fault_server
    s.add("/page.html", pages(corpora, 1)[0], content_type="text/html; charset=utf-8")
    s.add("/good.xml", feed(item("g1", s.url("/page.html"), "Good")))
    s.add("/html.xml", "<!doctype html><html><body><p>not a feed</p></body></html>",
          content_type="text/html")
    s.add("/empty.xml", "")
    s.add("/busy.xml", "", status=429, headers={"Retry-After": "600"})
    in_two_hours = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    s.add("/down.xml", "", status=503, headers={"Retry-After": in_two_hours})
    s.add("/gone.xml", "", status=410)
    s.add("/latin.xml", feed(item("l1", s.url("/page.html") + "#x", "Café")).encode("latin-1"),
          content_type="application/rss+xml; charset=utf-8")
    paths = {"good": "/good.xml", "html": "/html.xml", "empty": "/empty.xml", "busy": "/busy.xml",
             "down": "/down.xml", "gone": "/gone.xml", "latin": "/latin.xml", "hang": "/hang",
             "slow": "/slow", "bomb": "/gzip-bomb", "big": "/big", "loop": "/loop"}
    feeds = FeedsFile(feed=[FeedConfig(name=n, url=s.url(p)) for n, p in paths.items()])
    settings = SETTINGS.model_copy(update={"fetch": SETTINGS.fetch.model_copy(
        update={"concurrency": 16})})
    counts = run_once(engine, settings, feeds, ThesesFile())

    from classifier.fetch import feed_health
    health = {h["name"]: h for h in feed_health(engine)}
    assert health["good"]["state"] == "ok" and health["good"]["entries"] == 1
    assert health["latin"]["state"] == "ok" and health["latin"]["entries"] == 1
    assert health["latin"]["last_error"].startswith("malformed feed")
    assert health["gone"]["state"] == "disabled"
    # (the address guard needs allow_private_networks off: tests/test_fetch.py covers it)
    for name in ("html", "empty", "busy", "down", "hang", "slow", "bomb", "big", "loop"):
        assert health[name]["state"] == "failing", name
        assert health[name]["consecutive_errors"] == 1 and health[name]["next_poll_at"], name
    wait = health["down"]["next_poll_at"] - datetime.now(UTC)
    assert timedelta(minutes=115) < wait < timedelta(minutes=121)  # Retry-After as an HTTP date
    with engine.connect() as c:
        reasons = {r.url: (r.kind, r.reason) for r in c.execute(select(skips))
                   if r.stage == "fetch"}
    assert {n: reasons.get(s.url(p)) for n, p in paths.items()} == {
        "good": None, "html": ("skip", "not_a_feed"), "empty": ("skip", "empty_body"),
        "busy": ("failure", "http_429"), "down": ("failure", "http_503"),
        "gone": ("failure", "http_410"), "latin": ("failure", "malformed_feed"),
        "hang": ("failure", "deadline"), "slow": ("failure", "deadline"),
        "bomb": ("failure", "too_large"), "big": ("failure", "too_large"),
        "loop": ("failure", "too_many_redirects")}
    # the two entries: one article, and the same page again under a fragment → a duplicate
    assert counts.entries_new == 2 and counts.articles_new == 1 and counts.duplicates == 1
