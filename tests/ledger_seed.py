"""Store labels with exact judged fields for ledger and alert tests (rows as stage 5 writes)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, select

from classifier.store.tables import articles, labels, pairs, stories

BASE = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def add_label(conn: Connection, *, thesis: str = "oss-parity", title: str = "An article",
              evidence_type: str | None = "direct", direction: str | None = "supports",
              strength: str | None = "strong", trigger: str | None = None,
              story_id: int | None = None, relevant: bool = True) -> int:
    """Judged fields (+ optional shared story) → a new article, pair and pending label; its id."""
    now = datetime.now(UTC)
    n = (conn.execute(select(articles.c.id).order_by(articles.c.id.desc())).scalar() or 0) + 1
    if story_id is None:
        story_id = conn.execute(stories.insert().values(created_at=now)).inserted_primary_key[0]
    text = f"{title}. Body of article {n}: an independent evaluation reported results. " * 5
    sha = hashlib.sha256(text.encode()).hexdigest()
    url = f"https://news.example.org/{n}"
    article_id = conn.execute(articles.insert().values(
        url=url, canonical_url=url, title=f"{title} #{n}", site_name="news.example.org",
        published=BASE + timedelta(hours=n), text=text, text_sha256=sha, extracted_from="page",
        story_id=story_id, created_at=now)).inserted_primary_key[0]
    pair_id = conn.execute(pairs.insert().values(
        article_id=article_id, thesis_id=thesis, state="labeled", route_score=1.0,
        created_at=now, updated_at=now)).inserted_primary_key[0]
    if not relevant:
        evidence_type = direction = strength = trigger = None
    return conn.execute(labels.insert().values(
        pair_id=pair_id, article_id=article_id, thesis_id=thesis,
        cache_key=hashlib.sha256(f"{sha}:{thesis}".encode()).hexdigest(), relevant=relevant,
        evidence_type=evidence_type, direction=direction, strength=strength, confidence=0.8,
        rationale="Test proposal.", quotes=[], trigger=trigger, backend="scripted",
        model="scripted", prompt_hash="0" * 64, schema_hash="0" * 64, thesis_hash="0" * 64,
        tokens_in=0, tokens_out=0, cost_usd=0.0, latency_ms=0.0, attempts=1,
        review_state="pending", version=1, created_at=now)).inserted_primary_key[0]


def story_of(conn: Connection, label_id: int) -> int:
    """Label id → the story id of its article."""
    return conn.execute(select(articles.c.story_id)
                        .join(labels, labels.c.article_id == articles.c.id)
                        .where(labels.c.id == label_id)).scalar_one()
