"""Stage 2, extract: a fetched page (or, failing that, the feed's summary) → Article | Skip.

trafilatura does the work: main text plus metadata (title, author, date, site name) in one
`bare_extraction` call, with the options in `TRAFILATURA_OPTIONS` so that our text is exactly what
bare trafilatura returns for the same bytes (`tests/test_extract.py` checks this on the corpora).
Everything that declines a page is a `Skip` with a reason and a detail; a crash inside
trafilatura is an `ExtractError`. Nothing returns None.
"""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, date, datetime
from typing import Any

import lxml.html
import trafilatura
from lxml import etree

from classifier.config import ExtractSettings
from classifier.dedupe import canonical_url, text_sha256
from classifier.errors import ExtractError
from classifier.records import Article, ExtractedFrom, FeedEntry, Page, Skip, SkipReason, Stage

# Comments under an article are not the article; everything else is trafilatura's default.
TRAFILATURA_OPTIONS: dict[str, Any] = {"include_comments": False}

# Content types we hand to trafilatura; anything else named explicitly is not a page of text.
HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
# An empty or generic content type (text/plain, octet-stream) is sniffed instead.
SNIFF_TYPES = ("", "text/plain", "application/octet-stream", "binary/octet-stream")
_HTML_SNIFF = re.compile(rb"<\s*(!doctype\s+html|html|head|body|article|p|div|meta|title)\b", re.I)
_LANG = re.compile(r"^[a-z]{2,3}(?:[-_][a-z0-9]{2,8})?$", re.I)


def extract(
    entry: FeedEntry, page: Page | None, *, settings: ExtractSettings, page_error: str | None = None
) -> Article | Skip:
    """Feed entry + fetched page (None: not fetchable, say why in page_error) → Article | Skip."""
    if page is None:
        return _from_summary(entry, settings=settings, page_error=page_error or "page not fetched")
    ctype = page.content_type.split(";")[0].strip().lower()
    if not _looks_like_html(ctype, page.body):
        return Skip(
            stage=Stage.EXTRACT,
            reason=SkipReason.NOT_HTML,
            detail=f"content-type {ctype or 'missing'!r}, {len(page.body)} bytes, "
            f"starts {page.body[:24]!r}",
        )
    url = page.final_url or page.url
    doc = _bare_extraction(page.body, url=url)
    if doc is None or not (doc.get("text") or "").strip():
        return Skip(
            stage=Stage.EXTRACT,
            reason=SkipReason.NO_TEXT,
            detail=f"trafilatura found no main text in {len(page.body)} bytes",
        )
    text = doc["text"].strip()
    if len(text) < settings.min_text_chars:
        return Skip(
            stage=Stage.EXTRACT,
            reason=SkipReason.TOO_SHORT,
            detail=f"{len(text)} chars < min_text_chars {settings.min_text_chars}",
        )
    return Article(
        url=url,
        canonical_url=canonical_url(url),
        title=(doc.get("title") or entry.title or "").strip(),
        author=(doc.get("author") or entry.author or None),
        # the feed's timestamp has a time of day; the page's date (htmldate) only a day
        published=entry.published or _parse_date(doc.get("date")),
        site_name=doc.get("sitename") or None,
        text=text,
        text_sha256=text_sha256(text),
        language=_html_lang(page.body) or _detect_language(text),
        extracted_from=ExtractedFrom.PAGE,
    )


def bare_text(body: bytes, *, url: str | None = None) -> str | None:
    """Page bytes → the text bare `trafilatura.extract` gives with our options (the baseline)."""
    return trafilatura.extract(body, url=url, **TRAFILATURA_OPTIONS)


def _bare_extraction(body: bytes, *, url: str) -> dict[str, Any] | None:
    """Page bytes → trafilatura's text and metadata as a dict, None when it found nothing."""
    try:
        doc = trafilatura.bare_extraction(body, url=url, with_metadata=True, **TRAFILATURA_OPTIONS)
    except (ValueError, TypeError, etree.LxmlError, RecursionError) as e:
        # a crash inside the extractor is a failure of this item, not of the run
        raise ExtractError(f"trafilatura failed on {url}: {type(e).__name__}: {e}") from e
    if doc is None:
        return None
    return doc.as_dict() if hasattr(doc, "as_dict") else dict(doc)


def _from_summary(
    entry: FeedEntry, *, settings: ExtractSettings, page_error: str
) -> Article | Skip:
    """Feed entry whose page could not be fetched → Article from its summary, or Skip."""
    text = _strip_html(entry.summary)
    if len(text) < settings.min_text_chars:
        return Skip(
            stage=Stage.EXTRACT,
            reason=SkipReason.PAGE_UNAVAILABLE,
            detail=f"{page_error}; feed summary only {len(text)} chars "
            f"(< min_text_chars {settings.min_text_chars})",
        )
    url = entry.link or entry.guid
    return Article(
        url=url,
        canonical_url=canonical_url(url),
        title=entry.title.strip(),
        author=entry.author,
        published=entry.published,
        text=text,
        text_sha256=text_sha256(text),
        language=_detect_language(text),
        extracted_from=ExtractedFrom.SUMMARY,
    )


def _looks_like_html(ctype: str, body: bytes) -> bool:
    """Content type and first bytes → whether trafilatura should see this body."""
    if not body.strip():
        return False
    head = body[:4096]
    if b"\x00" in head:  # binary (PDF streams, images, garbage): never markup
        return False
    if ctype in HTML_TYPES or ctype in SNIFF_TYPES:
        return bool(_HTML_SNIFF.search(head))
    return False


def _strip_html(summary: str) -> str:
    """Feed summary (often HTML) → plain text with whitespace collapsed."""
    if not summary.strip():
        return ""
    if "<" in summary:
        try:
            summary = lxml.html.fragment_fromstring(summary, create_parent="div").text_content()
        except (etree.ParserError, ValueError):
            summary = re.sub(r"<[^>]*>", " ", summary)
    return re.sub(r"\s+", " ", htmllib.unescape(summary)).strip()


def _parse_date(value: str | None) -> datetime | None:
    """trafilatura's ISO date string → midnight UTC of that day, or None."""
    if not value:
        return None
    try:
        d = date.fromisoformat(value[:10])
    except ValueError:
        return None
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _html_lang(body: bytes) -> str | None:
    """Page bytes → the primary language subtag of <html lang=...>, when the page declares one."""
    m = re.search(rb"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z0-9_-]+)", body[:8192], re.I)
    if not m:
        return None
    tag = m.group(1).decode("ascii", "replace")
    return tag.split("-")[0].split("_")[0].lower() if _LANG.match(tag) else None


def _detect_language(text: str) -> str | None:
    """Main text → ISO 639-1 code by langdetect (seeded, first 2,000 chars), None if undecidable."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect is randomised; a fixed seed makes it repeatable
    try:
        return detect(text[:2000])
    except LangDetectException:
        return None
