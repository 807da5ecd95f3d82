"""Helpers for stage-5 tests: a thesis, an article stored as a pending pair."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine, insert

from classifier.config import ThesisConfig, TriggerConfig
from classifier.records import Label
from classifier.store.engine import utcnow, write
from classifier.store.tables import articles, pairs

THESIS = ThesisConfig(
    id="oss-parity", title="Open-source frontier parity",
    statement="Open-weights models match or beat the best contemporaneous closed frontier models "
              "on publicly available reasoning and coding benchmarks.",
    probability=0.75,
    scope="Benchmark performance on public reasoning and coding evaluations only; not product, "
          "UX or commercial-impact parity.",
    trigger=[TriggerConfig(id="above-85", direction="up", to=0.85,
                           condition="A third-party evaluation confirms an open-source model "
                                     "matches a contemporaneous closed frontier model.")])

TEXT = ("An independent evaluation lab ran the new open-weights model on SWE-bench Verified and "
        "GPQA Diamond. The open model scored 71.2% on SWE-bench Verified, within one point of the "
        "leading closed model’s 72.0%.\n\nThe lab said the “gap has effectively closed” on "
        "public coding benchmarks, though it cautioned that product quality is a separate matter.")

GOOD = Label(relevant=True, evidence_type="direct", direction="supports", strength="strong",
             trigger=None, confidence=0.8,
             rationale="An independent lab measured an open model within a point of the closed "
                       "leader on public coding benchmarks.",
             quotes=['The open model scored 71.2% on SWE-bench Verified'])

IRRELEVANT = Label(relevant=False, confidence=0.9, rationale="About llamas, the animal.", quotes=[])


def add_pair(engine: Engine, *, n: int = 0, text: str = TEXT, title: str = "Open model closes gap",
             thesis_id: str = "oss-parity") -> int:
    """Store an article (distinct per n) and a pending pair for it → pair id."""
    body = text if n == 0 else f"{text}\n\nUpdate {n}."
    now = utcnow()
    with write(engine) as conn:
        aid = conn.execute(insert(articles).values(
            url=f"https://example.org/a{n}", canonical_url=f"https://example.org/a{n}",
            title=title, text=body, text_sha256=hashlib.sha256(body.encode()).hexdigest(),
            site_name="example.org", extracted_from="page", created_at=now)).inserted_primary_key[0]
        return conn.execute(insert(pairs).values(
            article_id=aid, thesis_id=thesis_id, state="pending", created_at=now,
            updated_at=now)).inserted_primary_key[0]
