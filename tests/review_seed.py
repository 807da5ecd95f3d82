"""Fill a review queue for tests: real FNC-1 articles in the store, routed pairs, and stage 5
labeling them through the scripted backend (labels 'pending', pairs 'labeled', llm_calls rows)."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update

from classifier.backends import ScriptedBackend
from classifier.combine.provenance import CLASS_FIELDS, FORMAT, differing, disagreement, opinion
from classifier.config import ThesesFile, load_theses
from classifier.label import label_pending
from classifier.encoder import CLASSES
from classifier.records import Label
from classifier.store import write
from classifier.store.tables import articles, feeds, labels, pairs, stories

ROOT = Path(__file__).resolve().parent.parent

THESES = ("oss-parity", "eu-ai-act-delay", "ev-share-eu")
PROPOSALS = [  # cycled: varied types, directions, strengths; some trigger candidates
    dict(relevant=True, evidence_type="direct", direction="supports", strength="strong",
         trigger=None),
    dict(relevant=True, evidence_type="circumstantial", direction="undermines",
         strength="moderate", trigger=None),
    dict(relevant=False, evidence_type=None, direction=None, strength=None, trigger=None),
    dict(relevant=True, evidence_type="circumstantial", direction="neutral", strength="weak",
         trigger=None),
    dict(relevant=True, evidence_type="direct", direction="undermines", strength="moderate",
         trigger=None),
]
TRIGGERS = {"oss-parity": "above-85", "eu-ai-act-delay": "omnibus-adopted",
            "ev-share-eu": "ev-h1-above-25"}


@dataclass(frozen=True)
class SeedArticle:
    title: str
    text: str
    url: str
    site_name: str = "example.org"
    published: datetime | None = None


def fnc_articles(corpora: Path, n: int) -> Iterator[SeedArticle]:
    """FNC-1 (headline, body) pairs → n distinct articles (headline + body as the text)."""
    base = corpora / "fnc-1"
    with open(base / "train_bodies.csv", newline="", encoding="utf-8") as f:
        bodies = {r["Body ID"]: r["articleBody"] for r in csv.DictReader(f)}
    seen: set[str] = set()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with open(base / "train_stances.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if len(seen) >= n:
                return
            key = r["Headline"] + r["Body ID"]
            if key in seen or len(bodies[r["Body ID"]]) < 300:
                continue
            seen.add(key)
            i = len(seen)
            text = f"{r['Headline']}\n\n{bodies[r['Body ID']]}"
            yield SeedArticle(title=r["Headline"], text=text,
                              url=f"https://news{i % 7}.example.org/a/{i}",
                              site_name=f"news{i % 7}.example.org",
                              published=start + timedelta(minutes=37 * i))


def first_sentence(text: str) -> str:
    """Article text → a verbatim span of it (the first sentence of the body), for quotes."""
    body = text.split("\n\n", 1)[-1]
    m = re.search(r"[^.!?\n]{20,200}[.!?]", body)
    return (m.group(0) if m else body[:80]).strip()


def seed(engine: Engine, items: Sequence[SeedArticle], *, theses: Sequence[str] = THESES,
         feed: str = "wire", story_of: dict[int, int] | None = None,
         proposals: Sequence[dict[str, Any]] = PROPOSALS,
         theses_file: ThesesFile | None = None) -> list[int]:
    """Articles × theses → label ids (article-major), each label pending review.

    Articles and routed pairs are stored, then stage 5 (`label_pending`) labels every pair through
    the scripted backend, so labels, llm_calls and pair states are exactly what stage 5 writes.
    `story_of` maps an item index to the index of an earlier item whose story it joins.
    """
    now = datetime.now(UTC)
    config = theses_file or load_theses(ROOT / "theses.toml")
    config = config.model_copy(update={"thesis": [t for t in config.thesis if t.id in theses]})
    triggers = {t.id: [tr.id for tr in t.trigger] for t in config.thesis}
    answers: dict[int, Label] = {}
    pair_order: list[int] = []
    with write(engine) as conn:
        feed_id = conn.execute(select(feeds.c.id).where(feeds.c.name == feed)).scalar()
        if feed_id is None:
            feed_id = conn.execute(feeds.insert().values(
                name=feed, url=f"https://{feed}.example.org/feed.xml", tags=[], poll_minutes=60,
                enabled=True, consecutive_errors=0, error_count=0, created_at=now,
                last_status=200, last_polled_at=now)).inserted_primary_key[0]
        article_stories: list[int] = []
        k = conn.execute(select(func.count()).select_from(pairs)).scalar() or 0
        for i, a in enumerate(items):
            if story_of and i in story_of:
                story_id = article_stories[story_of[i]]
            else:
                story_id = conn.execute(
                    stories.insert().values(created_at=now)).inserted_primary_key[0]
            article_stories.append(story_id)
            sha = hashlib.sha256(a.text.encode()).hexdigest()
            article_id = conn.execute(articles.insert().values(
                url=a.url, canonical_url=f"{a.url}#{sha[:8]}", title=a.title,
                site_name=a.site_name, published=a.published, text=a.text, text_sha256=sha,
                extracted_from="page", story_id=story_id, feed_id=feed_id,
                created_at=now)).inserted_primary_key[0]
            for j, thesis in enumerate(theses):
                k += 1
                fields = dict(proposals[(i + j) % len(proposals)])
                if fields["relevant"] and k % 9 == 0 and triggers.get(thesis):
                    fields["trigger"] = triggers[thesis][0]
                pair_id = conn.execute(pairs.insert().values(
                    article_id=article_id, thesis_id=thesis, state="pending", route_score=1.0,
                    created_at=now, updated_at=now)).inserted_primary_key[0]
                pair_order.append(pair_id)
                answers[pair_id] = Label(
                    **fields, confidence=round(0.5 + (k * 37 % 50) / 100, 2),
                    rationale=f"Proposal {k}: the article reports on {a.title[:60]}.",
                    quotes=[first_sentence(a.text)] if fields["relevant"] else [])
    thesis_of = {pid: theses[n % len(theses)] for n, pid in enumerate(pair_order)}
    # label_pending takes pending pairs thesis by thesis, oldest first: script answers that way
    script = [answers[pid] for pid in sorted(pair_order, key=lambda p: (thesis_of[p], p))]
    counts = label_pending(engine, config, ScriptedBackend(script))
    assert counts.labeled == len(pair_order), counts
    with engine.connect() as conn:
        by_pair = dict(conn.execute(select(labels.c.pair_id, labels.c.id)
                                    .where(labels.c.pair_id.in_(pair_order))).all())
    return [by_pair[p] for p in pair_order]


def _peaked(fields: dict[str, Any], confidence: float) -> dict[str, list[float]]:
    """Judged fields → encoder head probabilities with `confidence` on each proposed class."""
    out = {}
    for head, classes in CLASSES.items():
        value = fields.get(head)
        value = ("yes" if value else "no") if head == "relevant" else value
        rest = (1.0 - confidence) / (len(classes) - 1)
        out[head] = [round(confidence if c == value else rest, 4) for c in classes]
    return out


def set_opinions(engine: Engine, label_id: int, *, encoder: dict[str, Any],
                 llm: dict[str, Any] | None, llm_status: str = "answered",
                 llm_reason: str | None = None, decided_by: str = "llm") -> dict[str, Any]:
    """Label id, each side's judged fields (+ confidence) → the proposals the combined labeler
    stores (classifier.combine.provenance), written with the disagreement count; the label's own
    fields become the deciding side's. Returns the proposals."""
    def label(fields: dict[str, Any], side: str) -> Label:
        return Label(**{"trigger": None, "confidence": 0.8, **fields},
                     rationale=f"the {side}'s reading", quotes=[])

    enc = label(encoder, "encoder")
    sides = {"encoder": opinion(enc, model="enc-test", probs=_peaked(encoder, enc.confidence))}
    sides["llm"] = opinion(label(llm, "LLM"), model="local:test", text=True) if llm else None
    decided_by = decided_by if llm else "encoder"
    proposals = {
        "format": FORMAT, **sides, "llm_status": llm_status, "llm_reason": llm_reason,
        "decided": {**{f: decided_by for f in CLASS_FIELDS}, "confidence": decided_by,
                    **{f: "llm" if llm else "none" for f in ("rationale", "quotes", "trigger")}},
        "combiner": None, "disagree": differing(sides["encoder"], sides["llm"])}
    chosen = (llm if decided_by == "llm" else encoder) or encoder
    with write(engine) as conn:
        conn.execute(update(labels).where(labels.c.id == label_id).values(
            proposals=proposals, disagreement=disagreement(proposals),
            **{f: chosen.get(f) for f in CLASS_FIELDS}))
    return proposals
