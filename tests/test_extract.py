"""Stage 2: our extract gives bare trafilatura's text on real pages, with metadata; every page that
yields no article ends in a Skip with a reason."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from classifier.config import ExtractSettings
from classifier.dedupe import canonical_url, text_sha256
from classifier.extract import bare_text, extract
from classifier.records import Article, ExtractedFrom, FeedEntry, Page, Skip, SkipReason, Stage

SETTINGS = ExtractSettings()
ANY_LENGTH = ExtractSettings(min_text_chars=1)


def _entry(**kw) -> FeedEntry:
    base = {"feed": "t", "guid": "g1", "link": "https://example.org/a", "title": "Feed title"}
    return FeedEntry(**(base | kw))


def _page(body: bytes, *, url: str = "https://example.org/a", ctype: str = "text/html") -> Page:
    return Page(url=url, final_url=url, status=200, content_type=ctype, body=body)


def _sample(paths: list, n: int) -> list:
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def _benchmark_pages(corpora) -> list[tuple[str, bytes]]:
    root = corpora / "article-extraction-benchmark"
    truth = json.loads((root / "ground-truth.json").read_text())
    files = _sample(sorted((root / "html").glob("*.html.gz")), 12)
    return [
        (truth[f.name.removesuffix(".html.gz")]["url"], gzip.decompress(f.read_bytes()))
        for f in files
    ]


def _trafilatura_eval_pages(corpora) -> list[tuple[str, bytes]]:
    root = corpora / "trafilatura-eval"
    manifest = json.loads((root / "subset_manifest.json").read_text())
    rows = _sample(manifest, 12)
    return [(r["url"], gzip.decompress((root / "html" / r["file"]).read_bytes())) for r in rows]


@pytest.mark.parametrize("source", ["article-extraction-benchmark", "trafilatura-eval"])
def test_same_text_as_bare_trafilatura(corpora, source):
    pages = (_benchmark_pages if source.startswith("article") else _trafilatura_eval_pages)(corpora)
    assert len(pages) == 12
    articles = 0
    for url, body in pages:
        got = extract(_entry(link=url), _page(body, url=url), settings=ANY_LENGTH)
        bare = bare_text(body, url=url)
        if isinstance(got, Skip):
            assert got.reason is SkipReason.NO_TEXT and not (bare or "").strip(), (url, got)
            continue
        articles += 1
        assert got.text == bare.strip(), url
        assert got.text_sha256 == text_sha256(bare)
        assert got.canonical_url == canonical_url(url)
        assert got.extracted_from is ExtractedFrom.PAGE
    assert articles >= 10  # these are article pages: nearly all must yield text


def test_metadata_from_the_page(corpora):
    root = corpora / "article-extraction-benchmark"
    truth = json.loads((root / "ground-truth.json").read_text())
    name = sorted((root / "html").glob("*.html.gz"))[0]
    url = truth[name.name.removesuffix(".html.gz")]["url"]
    body = gzip.decompress(name.read_bytes())
    art = extract(_entry(link=url, title="", author=None), _page(body, url=url), settings=SETTINGS)
    assert isinstance(art, Article)
    assert art.title.startswith("Google Stadia, Microsoft xCloud, Apple Arcade")
    assert art.author == "Sarah E Needleman"
    assert art.site_name == "Wall Street Journal"
    assert art.published == datetime(2019, 11, 19, tzinfo=UTC)
    assert art.language == "en"
    assert len(art.text) > 500  # a paywalled WSJ page: the teaser is all there is


def test_feed_timestamp_wins_over_page_day():
    body = _article_html("Wind power output rose again", 30)
    published = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    art = extract(_entry(published=published), _page(body), settings=SETTINGS)
    assert isinstance(art, Article) and art.published == published


SENTENCES = [
    "Grid operators said on Tuesday that the new turbines had delivered more power than forecast.",
    "It was the third month in a row, helped by steady winds over the northern coast.",
    "Analysts at two banks raised their estimates for the year after the figures came out.",
    "The operator plans to connect four more parks before the winter, its chief executive said.",
    "Consumer groups welcomed the news but warned that bills would not fall before next spring.",
    "A spokesperson for the ministry declined to comment on the timing of the next auction.",
    "Local councils have approved sites for storage batteries next to two of the substations.",
    "Engineers said curtailment had dropped to its lowest level since records began in 2019.",
]


def _article_html(title: str, paragraphs: int, lang: str | None = "en") -> bytes:
    lang_attr = f' lang="{lang}"' if lang else ""
    body = "".join(
        f"<p>{SENTENCES[i % len(SENTENCES)]} (Paragraph {i}.)</p>" for i in range(paragraphs)
    )
    return (
        f"<!DOCTYPE html><html{lang_attr}><head><title>{title}</title></head><body>"
        f"<nav><a href='/'>Home</a></nav><article><h1>{title}</h1>{body}"
        f"</article><footer>Imprint</footer></body></html>"
    ).encode()


@pytest.mark.parametrize(
    "ctype,body",
    [
        ("application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >>"),
        ("application/json", b'{"title": "not a page"}'),
        ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        ("text/html", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage\x00\xff\xfe"),
        ("text/html", b"Internal error, please retry later"),
        ("text/html", b""),
    ],
)
def test_not_html_is_a_skip(ctype, body):
    got = extract(_entry(), _page(body, ctype=ctype), settings=SETTINGS)
    assert isinstance(got, Skip)
    assert (got.stage, got.reason) == (Stage.EXTRACT, SkipReason.NOT_HTML)
    assert "content-type" in got.detail


def test_html_sniffed_when_type_is_missing():
    got = extract(_entry(), _page(_article_html("Sniffed", 5), ctype=""), settings=SETTINGS)
    assert isinstance(got, Article)


def test_too_short_is_a_skip():
    got = extract(_entry(), _page(_article_html("Short", 1)), settings=SETTINGS)
    assert isinstance(got, Skip) and got.reason is SkipReason.TOO_SHORT
    assert "< min_text_chars 200" in got.detail


def test_no_text_is_a_skip():
    body = (b"<html><head><title>x</title></head>"
            b"<body><div></div><script>var a=1;</script></body></html>")
    got = extract(_entry(), _page(body), settings=SETTINGS)
    assert isinstance(got, Skip) and got.reason is SkipReason.NO_TEXT


def test_summary_fallback_only_without_page():
    summary = "<p>" + "The regulator published its draft guidance on Monday. " * 8 + "</p>"
    art = extract(_entry(summary=summary), None, settings=SETTINGS, page_error="http_status 500")
    assert isinstance(art, Article)
    assert art.extracted_from is ExtractedFrom.SUMMARY
    assert art.text.startswith("The regulator published") and "<p>" not in art.text
    assert art.title == "Feed title" and art.language == "en"

    short = extract(_entry(summary="Too brief."), None, settings=SETTINGS, page_error="deadline")
    assert isinstance(short, Skip) and short.reason is SkipReason.PAGE_UNAVAILABLE
    assert short.detail.startswith("deadline;") and "10 chars" in short.detail


def test_language_from_html_lang_then_detector():
    de = extract(_entry(), _page(_article_html("Titel", 6, lang="de-DE")), settings=SETTINGS)
    assert isinstance(de, Article) and de.language == "de"
    text = (
        "<html><body><article>"
        + "".join(
            f"<p>Die Bundesregierung hat am Dienstag neue Regeln für Elektroautos beschlossen, die "
            f"ab dem kommenden Jahr gelten sollen (Absatz {i}).</p>"
            for i in range(6)
        )
        + "</article></body></html>"
    ).encode()
    detected = extract(_entry(), _page(text), settings=SETTINGS)
    assert isinstance(detected, Article) and detected.language == "de"
