"""Stages 1–3 against bare trafilatura on the same bytes, measured in the same run.

Serves N real pages from ../shared/corpora (the article-extraction-benchmark pages, then English
trafilatura-eval pages; decompressed in memory) and one RSS feed listing them on 127.0.0.1, runs
`pipeline.run_once` (fetch → extract → dedupe) into a fresh SQLite database, and times trafilatura
alone on the same bytes twice (before and after the pipeline; the mean is the baseline):

    baseline A  trafilatura.bare_extraction(body, url, with_metadata=True, include_comments=False)
                (the exact call stage 2 makes, so the ratio is our overhead: HTTP, records,
                SQL, dedupe)
    baseline B  trafilatura.extract(body), the library's defaults, no metadata

Then runs the pipeline again on the unchanged feed (force: every feed polled) and reports what the
re-run did: feed bodies parsed, pages requested, new rows. Last, stage 3's story assignment
precision/recall on the FNC-1 pairs of tests/test_dedupe.py.

    .venv/bin/python bench/ingest.py [--n 200] [--skip-stories]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trafilatura  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from classifier import fetch as fetch_stage  # noqa: E402
from classifier.config import FeedConfig, FeedsFile, Settings, ThesesFile  # noqa: E402
from classifier.extract import TRAFILATURA_OPTIONS  # noqa: E402
from classifier.pipeline import run_once  # noqa: E402
from classifier.store import connect, migrate  # noqa: E402
from classifier.store.tables import article_bands, articles, entries, skips, stories  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"


def load_pages(n: int) -> list[tuple[str, bytes]]:
    """N → (original URL, HTML bytes) for N corpus pages, benchmark pages first, deterministic."""
    out: list[tuple[str, bytes]] = []
    aeb = CORPORA / "article-extraction-benchmark"
    truth = json.loads((aeb / "ground-truth.json").read_text())
    for f in sorted((aeb / "html").glob("*.html.gz")):
        out.append((truth[f.name.removesuffix(".html.gz")]["url"], gzip.decompress(f.read_bytes())))
    te = CORPORA / "trafilatura-eval"
    manifest = json.loads((te / "subset_manifest.json").read_text())
    rows = [r for r in manifest if r["html_lang"] == "en"] + [
        r for r in manifest if r["html_lang"] != "en"
    ]
    for r in rows:
        out.append((r["url"], gzip.decompress((te / "html" / r["file"]).read_bytes())))
    if n > len(out):
        raise SystemExit(f"only {len(out)} corpus pages available")
    return out[:n]


class Site(ThreadingHTTPServer):
    """127.0.0.1 server for /feed.rss and /p/<i>.html; counts requests per kind."""

    daemon_threads = True

    def __init__(self, pages: list[tuple[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pages = pages
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.hits = {"feed": 0, "feed_304": 0, "page": 0}
        now = datetime(2026, 11, 1, tzinfo=UTC)
        items = "".join(
            f"<item><title>Page {i}</title><link>{self.base}/p/{i}.html</link>"
            f"<guid isPermaLink='false'>bench-{i}</guid>"
            f"<pubDate>{format_datetime(now - timedelta(minutes=i))}</pubDate>"
            f"<description>{escape(url)}</description></item>"
            for i, (url, _) in enumerate(pages)
        )
        self.feed = (
            f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
            f"<title>bench</title><link>{self.base}/</link><description>corpus pages"
            f"</description>{items}</channel></rss>"
        ).encode()


class Handler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:  # noqa: N802
        s = self.server
        if self.path == "/feed.rss":
            if self.headers.get("If-None-Match") == '"v1"':
                s.hits["feed_304"] += 1
                self._send(304, b"", "application/rss+xml")
                return
            s.hits["feed"] += 1
            self._send(200, s.feed, "application/rss+xml", etag='"v1"')
            return
        if self.path.startswith("/p/") and self.path.endswith(".html"):
            i = int(self.path[3:-5])
            s.hits["page"] += 1
            self._send(200, s.pages[i][1], "text/html; charset=utf-8")
            return
        self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def count_rows(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (entries, articles, stories, article_bands, skips)
        }


def time_bare(pages: list[tuple[str, bytes]], *, metadata: bool) -> tuple[float, float]:
    """Pages → (wall s, CPU s) for trafilatura alone over all of them, one after another."""
    t, c = time.perf_counter(), time.process_time()
    for url, body in pages:
        if metadata:
            trafilatura.bare_extraction(body, url=url, with_metadata=True, **TRAFILATURA_OPTIONS)
        else:
            trafilatura.extract(body)
    return time.perf_counter() - t, time.process_time() - c


def pipeline_run(site: Site, engine, concurrency: int, *, force: bool = False):  # type: ignore[no-untyped-def]
    """One run_once against the site → (wall s, CPU s, counts, rows, requests, feed parses)."""
    settings = Settings()
    settings = settings.model_copy(
        update={
            "net": settings.net.model_copy(update={"allow_private_networks": True}),
            "fetch": settings.fetch.model_copy(update={"concurrency": concurrency}),
        }
    )
    feeds = FeedsFile(feed=[FeedConfig(name="bench", url=f"{site.base}/feed.rss")])
    hits0, parses0 = dict(site.hits), fetch_stage.parse_count()
    t, c = time.perf_counter(), time.process_time()
    counts = run_once(engine, settings, feeds, ThesesFile(), force=force)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    hits = {k: site.hits[k] - hits0[k] for k in site.hits}
    return wall, cpu, counts, count_rows(engine), hits, fetch_stage.parse_count() - parses0


def fresh_engine(tmp: str, name: str):  # type: ignore[no-untyped-def]
    engine = connect(f"sqlite:///{tmp}/{name}.db")
    migrate(engine)
    return engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="pages to serve (>= 200 for the report)")
    ap.add_argument("--skip-stories", action="store_true", help="skip the FNC-1 story figures")
    args = ap.parse_args()

    pages = load_pages(args.n)
    mb = sum(len(b) for _, b in pages) / 1e6
    print(f"pages: {len(pages)} from the corpora, {mb:.1f} MB of HTML")
    time_bare(pages[:5], metadata=True)  # warm-up: imports, trafilatura's lazy setup

    site = Site(pages)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    default_conc = Settings().fetch.concurrency
    with tempfile.TemporaryDirectory() as tmp:
        a1 = time_bare(pages, metadata=True)
        e1 = fresh_engine(tmp, "one")
        w1, c1, counts1, rows1, hits1, parses1 = pipeline_run(site, e1, 1)
        a2 = time_bare(pages, metadata=True)
        e8 = fresh_engine(tmp, "many")
        w8, c8, counts8, rows8, hits8, parses8 = pipeline_run(site, e8, default_conc)
        b = time_bare(pages, metadata=False)
        # the re-run: same feed, unchanged, every feed polled again
        w_re, c_re, counts_re, rows_re, hits_re, parses_re = pipeline_run(
            site, e8, default_conc, force=True
        )
        e1.dispose()
        e8.dispose()
    site.shutdown()

    bare_wall, bare_cpu = (a1[0] + a2[0]) / 2, (a1[1] + a2[1]) / 2
    n = len(pages)
    print("\n== first run: stages 1-3 (pipeline.run_once, fresh SQLite) vs bare trafilatura ==")
    print(
        f"bare A = stage 2's trafilatura call  wall {bare_wall:6.2f} s  CPU {bare_cpu:6.2f} s"
        f"   (two runs: {a1[0]:.2f}, {a2[0]:.2f} s)"
    )
    print(f"bare B = trafilatura.extract default wall {b[0]:6.2f} s  CPU {b[1]:6.2f} s")
    print(
        f"pipeline, concurrency 1              wall {w1:6.2f} s  CPU {c1:6.2f} s"
        f"   {n / w1:5.1f} articles/s"
    )
    print(
        f"pipeline, concurrency {default_conc} (default)    wall {w8:6.2f} s  CPU {c8:6.2f} s"
        f"   {n / w8:5.1f} articles/s"
    )
    print(f"ratio wall, concurrency 1 / bare A   {w1 / bare_wall:6.3f}   (goal <= 1.25)")
    print(f"ratio CPU,  concurrency 1 / bare A   {c1 / bare_cpu:6.3f}")
    print(f"ratio wall, concurrency {default_conc} / bare A   {w8 / bare_wall:6.3f}")
    print(f"ratio wall, concurrency 1 / bare B   {w1 / b[0]:6.3f}   (B skips metadata)")
    print(f"counts: {counts1.model_dump(exclude={'started_at'})}")
    print(f"rows: {rows1}; requests: {hits1}; feed bodies parsed: {parses1}")

    print("\n== re-run on the unchanged feed (force: polled again) ==")
    print(
        f"wall {w_re:.2f} s; feed bodies parsed: {parses_re}; pages requested: {hits_re['page']};"
        f" feed 200s: {hits_re['feed']}, 304s: {hits_re['feed_304']}"
    )
    new_rows = {k: rows_re[k] - rows8[k] for k in rows8}
    print(
        f"new rows: {new_rows}; entries_new={counts_re.entries_new} "
        f"articles_new={counts_re.articles_new} feeds_not_modified={counts_re.feeds_not_modified}"
    )

    if not args.skip_stories:
        from tests.test_dedupe import story_assignment_scores

        with tempfile.TemporaryDirectory() as tmp:
            engine = fresh_engine(tmp, "stories")
            t = time.perf_counter()
            s = story_assignment_scores(engine, CORPORA, topics=150)
            dt = time.perf_counter() - t
            engine.dispose()
        print(
            "\n== stage 3 story assignment on FNC-1 pairs (syndicated light rewrites vs "
            "other articles on the same topic) =="
        )
        print(
            f"same-story pairs {s['same_pairs']}, different-story pairs {s['different_pairs']} "
            f"({s['excluded']} left out: exact shingle Jaccard >= 0.3 in FNC-1 itself)"
        )
        print(
            f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
            f"(tp {s['tp']}, fp {s['fp']}, fn {s['fn']}); {dt:.1f} s for the stores"
        )


if __name__ == "__main__":
    main()
