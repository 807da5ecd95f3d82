"""Stage 1: feedparser over the corpus, hostile XML, and every poll outcome's stored state."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from classifier.config import FeedConfig, FeedsFile, FetchSettings, NetSettings, Settings
from classifier.fetch import (
    due_feeds,
    enable_feed,
    feed_health,
    parse_count,
    parse_feed,
    poll_feed,
    sync_feeds,
)
from classifier.net import Client
from classifier.store import utcnow
from classifier.store.engine import as_utc
from classifier.store.tables import entries, feeds, skips
from tests.faultserver import FaultServer, fault_server  # noqa: F401  (fixture)

SETTINGS = Settings(net=NetSettings(allow_private_networks=True, deadline_s=2.0,
                                    connect_timeout_s=2.0))


def rss(items: list[tuple[str, str]], *, title: str = "Example feed") -> str:
    body = "".join(f"<item><guid>{g}</guid><title>{t}</title><link>http://example.com/{g}</link>"
                   f"<description>About {t}</description>"
                   f"<pubDate>Mon, 06 Jan 2025 10:00:00 GMT</pubDate></item>" for g, t in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title><link>http://example.com/</link>{body}</channel></rss>")


THREE = rss([("a1", "First"), ("a2", "Second"), ("a3", "Third")])


# --- the feedparser corpus -------------------------------------------------------------------

def _corpus_files(corpora: Path) -> list[Path]:
    root = corpora / "feedparser-tests"
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.name not in ("LICENSE", "SOURCE.md"))


def test_every_corpus_file_parses_without_an_uncaught_exception(corpora: Path) -> None:
    files = _corpus_files(corpora)
    assert len(files) > 2000
    crashed = []
    for p in files:
        parsed = parse_feed(p.read_bytes(), feed="t", base_url="http://example.org/feed.xml")
        if parsed.error and parsed.error.startswith("feedparser crashed"):
            crashed.append((p.name, parsed.error))
    assert crashed == []


EXPECT = re.compile(r"^Expect:\s+(.*?)\s*$", re.M)
# Assertions over the fields our FeedEntry keeps: title, link, id (our guid), summary, author.
SIMPLE = re.compile(r"^(not bozo and )?((entries\[0\]\['(title|link|id|summary|author)'\]|"
                    r"feed\['title'\]) == u?('[^'\\]*'|\"[^\"\\]*\")( and )?)+$")


def test_wellformed_sample_yields_what_its_own_assertions_expect(corpora: Path) -> None:
    checked, wrong = 0, []
    for p in _corpus_files(corpora):
        rel = p.relative_to(corpora / "feedparser-tests").as_posix()
        if not rel.startswith("wellformed/") or rel.startswith("wellformed/base/"):
            continue  # base/ expects the URL feedparser's own test server used
        head = p.read_bytes()[:2000].decode("utf-8", "replace")
        m = EXPECT.search(head)
        if "Header:" in head or not m or not SIMPLE.match(m.group(1)):
            continue
        # feedparser's harness serves these as application/xml without a document URL
        parsed = parse_feed(p.read_bytes(), feed="t", base_url="", content_type="application/xml")
        view = {"bozo": parsed.error is not None, "feed": {"title": parsed.title},
                "entries": [{"title": e.title, "link": e.link, "id": e.guid, "summary": e.summary,
                             "author": e.author} for e in parsed.entries]}
        checked += 1
        try:
            ok = eval(m.group(1), {"__builtins__": {}}, view)  # noqa: S307  (the corpus's own)
        except (IndexError, KeyError) as e:
            ok = repr(e)
        if ok is not True:
            wrong.append((rel, m.group(1), ok))
    assert checked >= 200
    assert wrong == []


def test_malformed_feed_keeps_salvaged_entries_and_the_error() -> None:
    broken = THREE.replace("</channel></rss>", "<item><title>Fourth & last</title>")
    parsed = parse_feed(broken.encode(), feed="t", base_url="http://example.com/feed")
    assert [e.guid for e in parsed.entries][:3] == ["a1", "a2", "a3"]
    assert parsed.error


def test_parse_feed_never_treats_the_body_as_a_file_name_or_url() -> None:
    for body in (b"/etc/passwd", b"http://127.0.0.1:1/feed", b"file:///etc/passwd"):
        parsed = parse_feed(body, feed="t", base_url="http://example.com/")
        assert parsed.entries == () and "root:" not in (parsed.title + (parsed.error or ""))


def test_entry_fields() -> None:
    parsed = parse_feed(THREE.encode(), feed="news", base_url="http://example.com/feed")
    e = parsed.entries[0]
    assert (e.feed, e.guid, e.title, e.link) == ("news", "a1", "First", "http://example.com/a1")
    assert e.summary == "About First" and e.published is not None
    assert e.published.isoformat() == "2025-01-06T10:00:00+00:00"


# --- hostile XML -----------------------------------------------------------------------------

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title>
<item><guid>x1</guid><title>&lol9;</title><description>&lol9;</description></item>
</channel></rss>"""


def test_billion_laughs_is_parsed_quickly_without_expanding() -> None:
    start = time.process_time()
    parsed = parse_feed(LAUGHS.encode(), feed="t", base_url="http://example.com/")
    cpu = time.process_time() - start
    text = parsed.title + "".join(e.title + e.summary for e in parsed.entries)
    assert text.count("lol") < 1000  # 10^9 if expanded
    assert cpu < 1.0  # the bound; expansion would take minutes and gigabytes


def _xxe(target: str) -> str:
    return f"""<?xml version="1.0"?>
<!DOCTYPE rss [ <!ENTITY xxe SYSTEM "{target}"> <!ENTITY % p SYSTEM "{target}"> %p; ]>
<rss version="2.0"><channel><title>t &xxe;</title>
<item><guid>x1</guid><title>a &xxe;</title><description>b &xxe;</description></item>
</channel></rss>"""


def test_external_entities_are_not_resolved(fault_server: FaultServer) -> None:
    fault_server.add("/secret", "TOP-SECRET-VALUE", content_type="text/plain")
    for target in ("file:///etc/passwd", fault_server.url("/secret")):
        start = time.process_time()
        parsed = parse_feed(_xxe(target).encode(), feed="t", base_url="http://example.com/")
        assert time.process_time() - start < 1.0
        text = parsed.title + "".join(e.title + e.summary for e in parsed.entries)
        assert "root:" not in text and "TOP-SECRET" not in text
    assert fault_server.hits("/secret") == 0


# --- polls against the fault server ----------------------------------------------------------

def setup_feeds(engine: Engine, server: FaultServer, **paths: str) -> None:
    sync_feeds(engine, FeedsFile(feed=[FeedConfig(name=n, url=server.url(p), poll_minutes=60)
                                       for n, p in paths.items()]))


def feed_row(engine: Engine, name: str):  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return c.execute(select(feeds).where(feeds.c.name == name)).one()


def poll(engine: Engine, name: str, settings: Settings = SETTINGS):  # type: ignore[no-untyped-def]
    with Client(settings.net) as client:
        return poll_feed(engine, client, feed_row(engine, name), settings)


def count(engine: Engine, table, **where) -> int:  # type: ignore[no-untyped-def]
    q = select(func.count()).select_from(table)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with engine.connect() as c:
        return c.execute(q).scalar_one()


def skip_rows(engine: Engine):  # type: ignore[no-untyped-def]
    with engine.connect() as c:
        return list(c.execute(select(skips).order_by(skips.c.id)))


def test_poll_stores_entries_and_validators_then_304_parses_nothing(
        engine: Engine, fault_server: FaultServer) -> None:
    fault_server.add("/feed.xml", THREE, etag='W/"v1"',
                     last_modified="Mon, 06 Jan 2025 10:00:00 GMT")
    setup_feeds(engine, fault_server, news="/feed.xml")
    r = poll(engine, "news")
    assert (r.outcome, r.entries_new, r.parsed) == ("ok", 3, True)
    row = feed_row(engine, "news")
    assert (row.etag, row.last_modified) == ('W/"v1"', "Mon, 06 Jan 2025 10:00:00 GMT")
    assert row.consecutive_errors == 0 and row.last_status == 200
    assert as_utc(row.next_poll_at) - as_utc(row.last_polled_at) == timedelta(minutes=60)
    assert count(engine, entries, state="pending") == 3

    parses = parse_count()
    r2 = poll(engine, "news")
    assert (r2.outcome, r2.status, r2.entries_new, r2.parsed) == ("not_modified", 304, 0, False)
    assert parse_count() == parses
    assert count(engine, entries) == 3 and skip_rows(engine) == []
    assert fault_server.requests[-1][1]["if-none-match"] == 'W/"v1"'


def test_repoll_without_validators_adds_no_rows(engine: Engine, fault_server: FaultServer) -> None:
    fault_server.add("/feed.xml", THREE)
    setup_feeds(engine, fault_server, news="/feed.xml")
    assert poll(engine, "news").entries_new == 3
    fault_server.add("/feed.xml", rss([("a1", "First"), ("a2", "Second"), ("a4", "Fourth")]))
    r = poll(engine, "news")
    assert (r.entries_seen, r.entries_new) == (3, 1)
    assert count(engine, entries) == 4


def test_410_disables_the_feed(engine: Engine, fault_server: FaultServer) -> None:
    fault_server.add("/gone.xml", "", status=410)
    setup_feeds(engine, fault_server, gone="/gone.xml")
    assert poll(engine, "gone").outcome == "disabled"
    row = feed_row(engine, "gone")
    assert "410" in row.disabled_reason and row.next_poll_at is None
    assert due_feeds(engine, force=True) == []
    assert [(s.kind, s.stage, s.reason) for s in skip_rows(engine)] == [
        ("failure", "fetch", "http_410")]
    health = {h["name"]: h for h in feed_health(engine)}
    assert health["gone"]["state"] == "disabled"
    assert enable_feed(engine, "gone") and [f.name for f in due_feeds(engine)] == ["gone"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_sets_the_next_poll(engine: Engine, fault_server: FaultServer,
                                       status: int) -> None:
    fault_server.add("/busy.xml", "busy", status=status, headers={"Retry-After": "7200"})
    setup_feeds(engine, fault_server, busy="/busy.xml")
    before = utcnow()
    assert poll(engine, "busy").outcome == "failed"
    row = feed_row(engine, "busy")
    wait = as_utc(row.next_poll_at) - before
    assert timedelta(seconds=7190) < wait < timedelta(seconds=7300)
    assert row.consecutive_errors == 1 and row.disabled_reason is None
    assert skip_rows(engine)[0].reason == f"http_{status}"


def test_errors_back_off_exponentially_then_disable(engine: Engine,
                                                    fault_server: FaultServer) -> None:
    fault_server.add("/err.xml", "oops", status=500)
    setup_feeds(engine, fault_server, err="/err.xml")
    settings = SETTINGS.model_copy(update={"fetch": FetchSettings(disable_after_errors=3,
                                                                  backoff_base_minutes=5)})
    waits = []
    for _ in range(2):
        assert poll(engine, "err", settings).outcome == "failed"
        row = feed_row(engine, "err")
        waits.append(as_utc(row.next_poll_at) - as_utc(row.last_polled_at))
    assert waits == [timedelta(minutes=5), timedelta(minutes=10)]
    assert poll(engine, "err", settings).outcome == "disabled"
    row = feed_row(engine, "err")
    assert row.disabled_reason.startswith("3 consecutive failures") and "500" in row.disabled_reason
    assert (row.consecutive_errors, row.error_count) == (3, 3)


@pytest.mark.parametrize("path,reason", [
    ("/hang", "deadline"), ("/slow", "deadline"), ("/gzip-bomb", "too_large"),
    ("/big", "too_large"), ("/loop", "too_many_redirects"),
])
def test_faults_end_as_a_failed_poll(engine: Engine, fault_server: FaultServer, path: str,
                                     reason: str) -> None:
    setup_feeds(engine, fault_server, bad=path)
    r = poll(engine, "bad", SETTINGS.model_copy(update={"net": SETTINGS.net.model_copy(
        update={"deadline_s": 2.0 if "bomb" not in path and "big" not in path else 30.0})}))
    assert r.outcome == "failed"
    row = feed_row(engine, "bad")
    assert row.consecutive_errors == 1 and row.next_poll_at is not None and row.last_error
    assert [(s.kind, s.reason) for s in skip_rows(engine)] == [("failure", reason)]
    assert count(engine, entries) == 0


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/feed.xml",
                                    "http://169.254.169.254/latest/meta-data/",
                                    "http://[::1]:{port}/feed.xml",
                                    "http://2130706433:{port}/feed.xml"])
def test_guard_on_refuses_private_addresses(engine: Engine, fault_server: FaultServer,
                                            target: str) -> None:
    fault_server.add("/feed.xml", THREE)
    url = target.format(port=fault_server.port)
    sync_feeds(engine, FeedsFile(feed=[FeedConfig(name="evil", url=url)]))
    r = poll(engine, "evil", Settings(net=NetSettings(deadline_s=2.0)))  # guard on: the default
    assert r.outcome == "failed"
    assert [s.reason for s in skip_rows(engine)] == ["blocked_address"]
    assert fault_server.hits("/feed.xml") == 0


@pytest.mark.parametrize("body,ctype,reason", [
    ("<!doctype html><html><head><title>Home</title></head><body><p>Welcome</p></body></html>",
     "text/html; charset=utf-8", "not_a_feed"),
    ("", "application/rss+xml", "empty_body"),
    ("   \n", "application/rss+xml", "empty_body"),
    ("\x00\x01garbage", "application/octet-stream", "not_a_feed"),
])
def test_non_feeds_are_stored_skips(engine: Engine, fault_server: FaultServer, body: str,
                                    ctype: str, reason: str) -> None:
    fault_server.add("/x", body, content_type=ctype)
    setup_feeds(engine, fault_server, x="/x")
    assert poll(engine, "x").outcome == "skipped"
    assert [(s.kind, s.stage, s.reason) for s in skip_rows(engine)] == [("skip", "fetch", reason)]
    row = feed_row(engine, "x")
    assert row.consecutive_errors == 1 and row.last_error.startswith(reason)


def test_wrong_charset_keeps_entries_and_records_the_error(engine: Engine,
                                                           fault_server: FaultServer) -> None:
    # Latin-1 bytes declared as UTF-8 both in the header and the XML declaration.
    body = rss([("c1", "Café crème"), ("c2", "Naïve")]).encode("latin-1")
    fault_server.add("/latin.xml", body, content_type="application/rss+xml; charset=utf-8")
    setup_feeds(engine, fault_server, latin="/latin.xml")
    r = poll(engine, "latin")
    assert (r.outcome, r.entries_new) == ("ok", 2)
    with engine.connect() as c:
        titles = sorted(c.execute(select(entries.c.title)).scalars())
    assert titles[0].startswith("Caf") and titles[1].startswith("Na")
    assert [(s.kind, s.reason) for s in skip_rows(engine)] == [("failure", "malformed_feed")]


def test_malformed_feed_poll_keeps_entries(engine: Engine, fault_server: FaultServer) -> None:
    fault_server.add("/m.xml", THREE.replace("</channel></rss>", "<item><title>cut"))
    setup_feeds(engine, fault_server, m="/m.xml")
    r = poll(engine, "m")
    assert r.outcome == "ok" and r.entries_new >= 3
    row = feed_row(engine, "m")
    assert row.consecutive_errors == 0 and row.last_error.startswith("malformed feed")


def test_sync_feeds_upserts_and_disables(engine: Engine) -> None:
    f1 = FeedConfig(name="a", url="http://example.com/a.xml")
    f2 = FeedConfig(name="b", url="http://example.com/b.xml", enabled=False)
    assert sync_feeds(engine, FeedsFile(feed=[f1, f2])) == {"added": 2, "updated": 0, "removed": 0}
    assert [f.name for f in due_feeds(engine)] == ["a"]
    assert sync_feeds(engine, FeedsFile(feed=[f1, f2]))["updated"] == 0
    with engine.begin() as c:
        c.execute(feeds.update().where(feeds.c.name == "a").values(
            disabled_reason="HTTP 410 Gone", etag='"x"', consecutive_errors=4))
    moved = f1.model_copy(update={"url": "http://example.com/a2.xml"})
    assert sync_feeds(engine, FeedsFile(feed=[moved]))["updated"] == 1
    row = feed_row(engine, "a")
    assert (row.url, row.disabled_reason, row.etag, row.consecutive_errors) == (
        "http://example.com/a2.xml", None, None, 0)
    assert feed_row(engine, "b").enabled is False  # dropped from the file: kept, not polled
    assert count(engine, feeds) == 2
    # an empty (or missing) feeds file changes nothing
    assert sync_feeds(engine, FeedsFile()) == {"added": 0, "updated": 0, "removed": 0}
    assert [f.name for f in due_feeds(engine)] == ["a"]


def test_a_feed_under_a_live_worker_lease_is_not_due(engine: Engine) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from classifier.fetch import due_feeds
    from classifier.store import utcnow, write
    from classifier.store.tables import feeds as feeds_table

    sync_feeds(engine, FeedsFile(feed=[FeedConfig(name="held", url="https://a.example/rss"),
                                       FeedConfig(name="free", url="https://b.example/rss")]))
    with write(engine) as conn:
        conn.execute(update(feeds_table).where(feeds_table.c.name == "held").values(
            claimed_by="w1", lease_until=utcnow() + timedelta(seconds=60)))
    assert [f.name for f in due_feeds(engine)] == ["free"]
    with write(engine) as conn:  # the lease ran out: the feed is due again
        conn.execute(update(feeds_table).where(feeds_table.c.name == "held").values(
            lease_until=utcnow() - timedelta(seconds=1)))
    assert sorted(f.name for f in due_feeds(engine)) == ["free", "held"]
