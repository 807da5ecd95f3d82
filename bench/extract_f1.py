"""Stage 2 quality against the corpora's ground truth.

1. article-extraction-benchmark (181 English article pages, full `articleBody` per page): the
   benchmark's metric, re-implemented here: per page, multiset of 4-token shingles (tokens = \\w+),
   tp/fp/fn normalised by the page's total so long pages weigh the same; precision and recall are
   means over pages, F1 is their harmonic mean. Also the same with single tokens (n=1).
   The stored `output/trafilatura.json` (trafilatura 2.0.0) is scored by the same code, as a check
   of the scorer against the published number (F1 0.958).
2. trafilatura-eval (700 pages, mostly German): `with` segments that must appear and `without`
   segments that must not; precision/recall/F1 over all segments, as trafilatura's evaluation does.

    .venv/bin/python bench/extract_f1.py [--limit N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.config import ExtractSettings  # noqa: E402
from classifier.extract import extract  # noqa: E402
from classifier.records import Article, FeedEntry, Page  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
TOKEN = re.compile(r"\w+")
ANY_LENGTH = ExtractSettings(min_text_chars=1)  # score every page, however short its text


def stage2_text(url: str, body: bytes) -> str:
    """Page bytes → the text our stage 2 stores ('' for a Skip)."""
    got = extract(
        FeedEntry(feed="bench", guid=url, link=url),
        Page(url=url, final_url=url, status=200, content_type="text/html", body=body),
        settings=ANY_LENGTH,
    )
    return got.text if isinstance(got, Article) else ""


def page_counts(truth: str, pred: str, n: int) -> tuple[float, float, float]:
    """Ground truth + prediction → (tp, fp, fn) over n-token shingle multisets, summing to 1."""

    def grams(text: str) -> Counter:
        toks = TOKEN.findall(text or "")
        return Counter(
            tuple(toks[i : i + n]) for i in range(max(1, len(toks) - n + 1)) if toks[i : i + n]
        )

    t, p = grams(truth), grams(pred)
    tp = sum((t & p).values())
    fp = sum((p - t).values())
    fn = sum((t - p).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def prf(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Per-page (tp, fp, fn) → (precision, recall, F1) as the benchmark averages them."""

    def ratio(a: float, b: float, other: float) -> float:
        if b == other == 0:
            return 1.0
        return a / (a + b) if a + b else 0.0

    p = statistics.mean(ratio(tp, fp, fn) for tp, fp, fn in rows if tp + fp > 0)
    r = statistics.mean(ratio(tp, fn, fp) for tp, fp, fn in rows if tp + fn > 0)
    return p, r, 2 * p * r / (p + r)


def benchmark() -> None:
    root = CORPORA / "article-extraction-benchmark"
    truth = json.loads((root / "ground-truth.json").read_text())
    stored = json.loads((root / "output" / "trafilatura.json").read_text())
    stored = stored.get("output", stored)
    ours: dict[str, str] = {}
    t = time.perf_counter()
    for key, item in truth.items():
        body = gzip.decompress((root / "html" / f"{key}.html.gz").read_bytes())
        ours[key] = stage2_text(item["url"], body)
    dt = time.perf_counter() - t
    print(f"== article-extraction-benchmark: {len(truth)} pages, stage 2 in {dt:.1f} s ==")
    for n, label in ((4, "4-token shingles (the benchmark's metric)"), (1, "single tokens")):
        for name, pred in (
            ("our stage 2", ours),
            (
                "stored trafilatura 2.0.0 output",
                {k: v.get("articleBody", "") for k, v in stored.items()},
            ),
        ):
            p, r, f = prf([page_counts(truth[k]["articleBody"], pred[k], n) for k in truth])
            print(f"  {label:<42} {name:<32} P {p:.3f}  R {r:.3f}  F1 {f:.3f}")
    empty = sum(1 for v in ours.values() if not v)
    print(f"  pages where stage 2 produced no text: {empty}")


def trafilatura_eval(limit: int | None) -> None:
    root = CORPORA / "trafilatura-eval"
    data = json.loads((root / "evaldata.subset.json").read_text())
    items = list(data.items())[:limit] if limit else list(data.items())
    tp = fn = fp = tn = 0
    t = time.perf_counter()
    for url, item in items:
        body = gzip.decompress((root / "html" / (item["file"] + ".gz")).read_bytes())
        text = stage2_text(url, body)
        for seg in item.get("with", []):
            if seg in text:
                tp += 1
            else:
                fn += 1
        for seg in item.get("without", []):
            if seg in text:
                fp += 1
            else:
                tn += 1
    dt = time.perf_counter() - t
    p, r = tp / (tp + fp), tp / (tp + fn)
    print(f"== trafilatura-eval: {len(items)} pages, stage 2 in {dt:.1f} s ==")
    print(f"  segments: with {tp + fn} (found {tp}), without {fp + tn} (leaked {fp})")
    print(
        f"  P {p:.3f}  R {r:.3f}  F1 {2 * p * r / (p + r):.3f}  "
        f"accuracy {(tp + tn) / (tp + tn + fp + fn):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--limit", type=int, default=None, help="trafilatura-eval pages (default all 700)"
    )
    args = ap.parse_args()
    benchmark()
    trafilatura_eval(args.limit)


if __name__ == "__main__":
    main()
