"""The ingest verbs through click's CliRunner: fetch, feeds, articles, show, run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifier.cli import main
from classifier.fetch import parse_count
from tests.faultserver import FaultServer, fault_server  # noqa: F401  (fixture)

RSS = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
       '{items}</channel></rss>')


def item(guid: str, link: str, title: str) -> str:
    return f"<item><guid>{guid}</guid><title>{title}</title><link>{link}</link></item>"


@pytest.fixture
def setup(tmp_path: Path, fault_server: FaultServer, corpora: Path, db_url: str):  # type: ignore[no-untyped-def]
    s = fault_server
    html = sorted((corpora / "article-extraction-benchmark" / "html").glob("*.html.gz"))[:2]
    for i, p in enumerate(html):
        s.add(f"/p{i}.html", gzip.decompress(p.read_bytes()), content_type="text/html")
    s.add("/news.xml", RSS.format(items=item("n1", s.url("/p0.html"), "One")
                                  + item("n2", s.url("/p1.html"), "Two")), etag='"n-1"')
    s.add("/gone.xml", "", status=410)
    (tmp_path / "feeds.toml").write_text(
        f'[[feed]]\nname = "news"\nurl = "{s.url("/news.xml")}"\n\n'
        f'[[feed]]\nname = "gone"\nurl = "{s.url("/gone.xml")}"\n\n'
        f'[[feed]]\nname = "off"\nurl = "{s.url("/news.xml")}"\nenabled = false\n')
    (tmp_path / "theses.toml").write_text("")
    (tmp_path / "evidence.toml").write_text(
        "[net]\nallow_private_networks = true\ndeadline_s = 3\n")
    base = ["--db", db_url, "--config", str(tmp_path / "evidence.toml"),
            "--feeds", str(tmp_path / "feeds.toml"), "--theses", str(tmp_path / "theses.toml")]

    def invoke(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
        result = CliRunner().invoke(main, [args[0], *base, *args[1:]], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result
    return invoke


def test_fetch_then_refetch_unchanged_parses_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    first = json.loads(setup("fetch", "--json").stdout)
    by_feed = {f["feed"]: f for f in first["feeds"]}
    assert set(by_feed) == {"news", "gone"}  # "off" is disabled in feeds.toml
    assert (by_feed["news"]["outcome"], by_feed["news"]["entries_new"]) == ("ok", 2)
    assert by_feed["gone"]["outcome"] == "disabled"

    # not due again for an hour: a plain fetch polls nothing
    assert json.loads(setup("fetch", "--json").stdout)["feeds"] == []
    # forced: a conditional GET, 304, zero bodies parsed, zero new rows
    parses = parse_count()
    again = json.loads(setup("fetch", "--all", "--json").stdout)
    assert [(f["feed"], f["outcome"], f["parsed"], f["entries_new"]) for f in again["feeds"]] == [
        ("news", "not_modified", False, 0)]
    assert again["counts"]["entries_new"] == 0 and parse_count() == parses
    rows = json.loads(setup("articles", "--json").stdout)
    assert sorted(r["state"] for r in rows) == ["pending", "pending"]
    # naming a disabled feed says why it was not polled
    named = json.loads(setup("fetch", "--feed", "gone", "--feed", "off", "--json").stdout)
    assert named["feeds"] == [] and "410" in named["not_polled"]["gone"]
    assert "feeds.toml" in named["not_polled"]["off"]
    assert "evidence feeds --enable gone" in setup("fetch", "--feed", "gone").stderr


def test_feeds_shows_health_and_enable_clears_a_disable(setup) -> None:  # type: ignore[no-untyped-def]
    setup("fetch")
    health = {h["name"]: h for h in json.loads(setup("feeds", "--json").stdout)}
    assert health["news"]["state"] == "ok" and health["news"]["last_status"] == 200
    assert health["news"]["next_poll_at"] is not None and health["news"]["entries"] == 2
    assert health["gone"]["state"] == "disabled" and "410" in health["gone"]["disabled_reason"]
    assert health["gone"]["consecutive_errors"] == 1
    assert health["off"]["state"] == "disabled in feeds.toml"
    text = setup("feeds").stdout
    assert "410" in text and "news" in text
    health = {h["name"]: h for h in json.loads(setup("feeds", "--enable", "gone", "--json").stdout)}
    assert health["gone"]["disabled_reason"] is None and health["gone"]["due"] is True


def test_run_articles_show(setup) -> None:  # type: ignore[no-untyped-def]
    counts = json.loads(setup("run", "--model", "none", "--json").stdout)
    assert (counts["entries_new"], counts["articles_new"]) == (2, 2)
    rows = json.loads(setup("articles", "--json", "--state", "done", "--feed", "news").stdout)
    assert len(rows) == 2 and all(r["article_id"] for r in rows)
    art = json.loads(setup("show", str(rows[0]["article_id"]), "--json").stdout)
    assert art["id"] == rows[0]["article_id"] and len(art["text"]) > 200
    assert art["entries"][0]["feed"] == "news"
    # stage 4 ran (no labeling with --model none): each thesis's pair is shown with its state
    assert {h["state"] for h in art["labels"]} <= {"pending", "skipped"}
    assert all(h["label"] is None and h["route_score"] is not None for h in art["labels"])
    shown = setup("show", str(rows[0]["id"]), "--entry").stdout
    assert art["title"][:20] in shown
    assert json.loads(setup("articles", "--json", "--since", "2999-01-01").stdout) == []
    assert len(json.loads(setup("articles", "--json", "--since", "2000-01-01").stdout)) == 2
    assert json.loads(setup("articles", "--json", "--until", "2000-01-01").stdout) == []
    assert "2 entries" in setup("articles").stdout
    # a second run: nothing new anywhere
    again = json.loads(setup("run", "--all", "--model", "none", "--json").stdout)
    assert (again["feeds_not_modified"], again["entries_new"], again["articles_new"]) == (1, 0, 0)


def test_quiet_run_prints_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    result = setup("run", "--model", "none", "--quiet")
    assert result.stdout == "" and result.stderr == ""


def test_errors_are_one_line_and_exit_1(setup) -> None:  # type: ignore[no-untyped-def]
    result = setup("fetch", "--feed", "nope", ok=False)
    assert result.exit_code == 1 and "unknown feed 'nope'" in result.stderr
    result = setup("show", "999", ok=False)
    assert result.exit_code == 1 and "no article 999" in result.stderr
    result = setup("articles", "--since", "yesterday", ok=False)
    assert result.exit_code == 2 and "not a date" in result.stderr


def test_run_with_a_missing_model_file_is_one_clear_error(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.gguf"
    result = setup("run", "--model", f"local:{missing}", ok=False)
    assert result.exit_code == 1 and str(missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("verb", ["fetch", "feeds", "articles", "show", "run"])
def test_help(verb: str) -> None:
    result = CliRunner().invoke(main, [verb, "--help"])
    assert result.exit_code == 0 and "--db" in result.output
