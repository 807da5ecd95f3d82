"""The offline demo end to end (stages 1–3): served on 127.0.0.1, every entry ends in a stored
state, the syndicated copy joins its original's story, the broken pages are skips with reasons,
and a re-run adds nothing."""

from __future__ import annotations

import tomllib

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select

from classifier.cli import main
from classifier.config import Settings
from classifier.demo import DEMO_DATA, demo_feeds, demo_theses, run_demo, serve
from classifier.pipeline import run_once
from classifier.store.tables import articles, entries, skips
from tests.conftest import ROOT

SYNDICATED = {
    "Commission proposes pushing AI Act rules for general-purpose models to 2028",
    "EU executive proposes one-year delay to AI Act rules for general-purpose AI",
}


def test_demo_run_counts(engine):
    rep = run_demo(engine, Settings())
    c = rep.counts
    assert (c.feeds_polled, c.feeds_failed, c.entries_new) == (3, 0, 23)
    # 19 pages + 1 summary fallback (404 page) = 20 articles; 2 broken pages; 1 duplicate URL
    assert (c.articles_new, c.skipped, c.failed, c.duplicates) == (20, 2, 0, 1)
    assert rep.articles == 20 and rep.from_summary == 1
    assert rep.stories == 19 and c.stories_new == 19
    # the syndicated wire copy (another feed, light rewrite) joined the original's story
    assert len(rep.multi_stories) == 1
    story = rep.multi_stories[0]
    assert set(story.titles) == SYNDICATED
    assert set(story.feeds) == {"brussels-ledger", "continental-wire"}
    reasons = {(s.stage, s.reason) for s in rep.skipped}
    assert reasons == {
        ("extract", "page_unavailable"),
        ("extract", "not_html"),
        ("dedupe", "duplicate_url"),
    }
    broken = next(s for s in rep.skipped if s.reason == "page_unavailable")
    assert "HTTP 500" in broken.detail and broken.title.startswith("Rail strike")
    garbage = next(s for s in rep.skipped if s.reason == "not_html")
    assert garbage.title.startswith("Markets live")
    with engine.connect() as conn:
        states = dict(
            conn.execute(select(entries.c.state, func.count()).group_by(entries.c.state)).all()
        )
        assert states == {"done": 20, "skipped": 3}
        ingest_skips = (
            select(func.count())
            .select_from(skips)
            .where(skips.c.stage.in_(["fetch", "extract", "dedupe"]))
        )
        assert conn.execute(ingest_skips).scalar_one() == 3
        summary = conn.execute(
            select(articles.c.title, articles.c.language).where(
                articles.c.extracted_from == "summary"
            )
        ).one()
        assert summary.title.startswith("Meta confirms open release of Llama 5")
        assert {r for (r,) in conn.execute(select(articles.c.language))} == {"en"}


def test_rerun_adds_nothing(engine):
    settings = Settings().model_copy(
        update={"net": Settings().net.model_copy(update={"allow_private_networks": True})}
    )
    with serve() as server:
        first = run_once(engine, settings, demo_feeds(server.base_url), demo_theses())
        seen = len(server.log)
        second = run_once(engine, settings, demo_feeds(server.base_url), demo_theses(), force=True)
        rerun = server.log[seen:]
    assert first.articles_new == 20
    # the re-run: three conditional GETs answered 304 (stored ETags), no page fetched
    assert sorted(status for _, status in rerun) == [304, 304, 304]
    assert all(path.startswith("/feeds/") for path, _ in rerun)
    assert (second.entries_new, second.articles_new, second.feeds_not_modified) == (0, 0, 3)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(articles)).scalar_one() == 20


def test_guard_stays_on_outside_the_demo(engine):
    """The demo allows 127.0.0.1 for its own run only; the same feeds with default settings fail."""
    with serve() as server:
        counts = run_once(engine, Settings(), demo_feeds(server.base_url), demo_theses())
        assert server.log == []
    assert counts.feeds_failed == 3 and counts.entries_new == 0


def test_server_serves_feeds_pages_and_faults():
    with serve() as server, httpx.Client(base_url=server.base_url) as http:
        rss = http.get("/feeds/wire.rss")
        assert rss.status_code == 200 and "rss+xml" in rss.headers["content-type"]
        assert "{{BASE}}" not in rss.text and f"{server.base_url}/pages/wire/" in rss.text
        atom = http.get("/feeds/policy.atom")
        assert atom.text.lstrip().startswith("<?xml") and "<feed" in atom.text
        assert (
            http.get(
                "/feeds/policy.atom", headers={"If-None-Match": atom.headers["etag"]}
            ).status_code
            == 304
        )
        assert http.get("/pages/wire/2026/11/rail-strike-live.html").status_code == 500
        assert (
            http.get("/pages/northwind/2026/11/meta-llama-5-open-release.html").status_code == 404
        )
        assert http.get("/pages/../theses.toml").status_code == 404


def test_demo_data_is_package_data_and_theses_match_the_repo():
    assert DEMO_DATA.parent.name == "classifier"
    pages = list((DEMO_DATA / "pages").rglob("*.html"))
    assert len(pages) == 20  # 19 articles + the garbage page
    packaged = tomllib.loads((DEMO_DATA / "theses.toml").read_text())
    assert packaged == tomllib.loads((ROOT / "theses.toml").read_text())
    assert {t.id for t in demo_theses().thesis} == {"oss-parity", "eu-ai-act-delay", "ev-share-eu"}


def test_cli_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(main, ["demo", "--model", "none", "--db", db])
    assert result.exit_code == 0, result.output
    assert "23 new entries" in result.output and "1 duplicates dropped" in result.output
    assert "page_unavailable" in result.output and "not_html" in result.output
    assert "joins 2 articles" in result.output
    # the same database again is not fresh: a clear error, exit 1, nothing run
    again = CliRunner().invoke(main, ["demo", "--model", "none", "--db", db])
    assert again.exit_code == 1 and "fresh database" in again.output
    # the default ./demo.db is the demo's own and is recreated each time
    (tmp_path / "demo.db").write_bytes(b"left over from an earlier demo")
    ok = CliRunner().invoke(main, ["demo", "--model", "none", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"articles": 20' in ok.output
    assert (tmp_path / "demo.db").stat().st_size > 10_000
