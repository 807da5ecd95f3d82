"""Near-duplicate check of the written training set: stage 3 (the product's own dedupe) over every
training article and every seed gold article, in a fresh SQLite database.

Each article goes through `dedupe.store_article` exactly as a fetched one would: same URL, same
normalised text, or a MinHash Jaccard of word 3-shingles at or above the story threshold (0.4)
puts it into an existing story. Reported: stories holding more than one training article, stories
holding a training and a seed article, exact-text and URL duplicates, and the closest pairs
found (estimated Jaccard over all pairs), so the margin below the threshold is visible.
Also the closest pairs of ledes (first 30 words), which would catch one opening reused across items.

    .venv/bin/python bench/train_dupes.py                     # eval/train/items.jsonl vs eval/gold/seed.jsonl
    .venv/bin/python bench/train_dupes.py --top 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.dedupe import STORY_THRESHOLD, canonical_url, signature, store_article, \
    text_sha256  # noqa: E402
from classifier.records import Article, Skip  # noqa: E402
from classifier.store import connect, migrate  # noqa: E402


def _articles(path: Path, tag: str) -> list[tuple[str, str, Article]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        o = json.loads(line)
        a = o["article"]
        url = a.get("url") or f"https://example.invalid/{o['id']}"
        out.append((tag, o["id"], Article(url=url, canonical_url=canonical_url(url),
                                          title=a.get("title", ""), text=a["text"],
                                          text_sha256=text_sha256(a["text"]))))
    return out


def _closest(sigs: np.ndarray, ids: list[str], top: int) -> list[tuple[float, str, str]]:
    sims = []
    for i in range(len(ids)):
        eq = (sigs[i + 1:] == sigs[i]).mean(axis=1)
        for j in np.argsort(-eq)[:top]:
            sims.append((float(eq[j]), ids[i], ids[i + 1 + int(j)]))
    return sorted(sims, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default=str(ROOT / "eval/train/items.jsonl"))
    ap.add_argument("--seed-gold", default=str(ROOT / "eval/gold/seed.jsonl"))
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args()
    rows = _articles(Path(a.train), "train") + _articles(Path(a.seed_gold), "seed")
    story_of: dict[str, int] = {}
    skips: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(f"sqlite:///{tmp}/dupes.db")
        migrate(engine)
        with engine.begin() as conn:
            for tag, item_id, art in rows:
                res = store_article(conn, art, feed_id=None)
                if isinstance(res, Skip):
                    skips.append((f"{tag}:{item_id}", f"{res.reason.value} {res.detail}"))
                else:
                    story_of[f"{tag}:{item_id}"] = res.story_id
    members: dict[int, list[str]] = {}
    for key, sid in story_of.items():
        members.setdefault(sid, []).append(key)
    multi_train = [m for m in members.values() if sum(k.startswith("train:") for k in m) > 1]
    mixed = [m for m in members.values() if any(k.startswith("train:") for k in m)
             and any(k.startswith("seed:") for k in m)]
    keys = [f"{t}:{i}" for t, i, _ in rows]
    sigs = np.stack([signature(art.text) for _, _, art in rows])
    ledes = np.stack([signature(" ".join(art.text.split()[:30])) for _, _, art in rows])
    closest, closest_ledes = _closest(sigs, keys, a.top), _closest(ledes, keys, a.top)
    n = Counter(t for t, _, _ in rows)
    print(f"{n['train']} training and {n['seed']} seed gold articles through stage 3 "
          f"(story threshold: estimated Jaccard >= {STORY_THRESHOLD})")
    print(f"stories: {len(members)}; with 2+ training articles: {len(multi_train)}; "
          f"training + seed in one story: {len(mixed)}; URL/text duplicates: {len(skips)}")
    for m in multi_train + mixed:
        print("  shared story:", ", ".join(m))
    for k, why in skips:
        print("  duplicate:", k, why)
    print("closest pairs, whole text (estimated Jaccard):")
    for s, x, y in closest:
        print(f"  {s:.3f}  {x}  {y}")
    print("closest pairs, first 30 words:")
    for s, x, y in closest_ledes:
        print(f"  {s:.3f}  {x}  {y}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "train": n["train"], "seed": n["seed"], "stories": len(members),
            "multi_train": multi_train, "train_and_seed": mixed, "duplicates": skips,
            "closest": closest, "closest_ledes": closest_ledes}, indent=2))
    if multi_train or mixed or skips:
        sys.exit(1)


if __name__ == "__main__":
    main()
