"""Frozen records that cross stages. Stages pass these, never bare dicts.

    feeds.toml ─1 fetch─▶ FeedEntry ─2 extract─▶ Article ─3 dedupe─▶ Article(story_id)
    Article × Thesis ─4 route─▶ RouteDecision ─5 label─▶ Label (+ LabelMeta) ─6 queue─▶ review

A stage that declines an item returns a `Skip`; a stage that fails raises an error from
`errors.py`. Either way the item ends in a stored state.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    """Base for records: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------
# Skips: data, not exceptions
# ---------------------------------------------------------------------------------------------


class Stage(str, enum.Enum):
    FETCH = "fetch"
    EXTRACT = "extract"
    DEDUPE = "dedupe"
    ROUTE = "route"
    LABEL = "label"


class SkipReason(str, enum.Enum):
    # stage 1
    NOT_MODIFIED = "not_modified"
    FEED_DISABLED = "feed_disabled"
    NOT_A_FEED = "not_a_feed"
    EMPTY_BODY = "empty_body"
    # stage 2
    TOO_SHORT = "too_short"
    NOT_HTML = "not_html"
    NO_TEXT = "no_text"
    PAGE_UNAVAILABLE = "page_unavailable"
    # stage 3
    DUPLICATE_URL = "duplicate_url"
    DUPLICATE_GUID = "duplicate_guid"
    DUPLICATE_TEXT = "duplicate_text"
    # stage 4
    LOW_SCORE = "low_score"
    FEED_NOT_WATCHED = "feed_not_watched"
    SAME_STORY = "same_story"  # a sibling article of the same story was already sent
    # stage 5
    BUDGET = "budget"


class Skip(Record):
    """A stage declined an item, with a stable reason code and a human detail."""

    stage: Stage
    reason: SkipReason
    detail: str = ""


# ---------------------------------------------------------------------------------------------
# Stage 1 → 2
# ---------------------------------------------------------------------------------------------


class FeedEntry(Record):
    """One entry of a parsed feed, as feedparser salvaged it."""

    feed: str
    guid: str
    link: str | None = None
    title: str = ""
    summary: str = ""
    author: str | None = None
    published: datetime | None = None


class Page(Record):
    """A fetched HTTP response body, decoded bytes capped by `net.py`."""

    url: str
    final_url: str
    status: int
    content_type: str = ""
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None


# ---------------------------------------------------------------------------------------------
# Stage 2 → 3 → 4
# ---------------------------------------------------------------------------------------------


class ExtractedFrom(str, enum.Enum):
    PAGE = "page"
    SUMMARY = "summary"  # the page could not be fetched; the feed's summary stands in


class Article(Record):
    """Main text and metadata of one article, ready for dedupe and labeling."""

    url: str
    canonical_url: str
    title: str = ""
    author: str | None = None
    published: datetime | None = None
    site_name: str | None = None
    text: str
    text_sha256: str
    language: str | None = None
    extracted_from: ExtractedFrom = ExtractedFrom.PAGE


class StoredArticle(Record):
    """Stage 3's result for a new article: its row, its story, and whether it opened that story."""

    article_id: int
    story_id: int
    new_story: bool
    similarity: float | None = None  # estimated Jaccard to the story's closest article, if joined


# ---------------------------------------------------------------------------------------------
# Stage 4 → 5
# ---------------------------------------------------------------------------------------------


class RouteDecision(Record):
    """Whether an (article, thesis) pair is worth an LLM call, with the score that decided."""

    thesis_id: str
    send: bool
    score: float
    reason: str = ""


# ---------------------------------------------------------------------------------------------
# Stage 5 → 6: the label, exactly as ../shared/spec/labels.md defines it
# ---------------------------------------------------------------------------------------------


class EvidenceType(str, enum.Enum):
    DIRECT = "direct"
    CIRCUMSTANTIAL = "circumstantial"


class Direction(str, enum.Enum):
    SUPPORTS = "supports"
    UNDERMINES = "undermines"
    NEUTRAL = "neutral"


class Strength(str, enum.Enum):
    WEAK = "weak"
    MODERATE = "moderate"
    STRONG = "strong"


class GoldLabel(Record):
    """The judged fields of a label: what gold files and editors' corrections carry."""

    relevant: bool
    evidence_type: EvidenceType | None = None
    direction: Direction | None = None
    strength: Strength | None = None
    trigger: str | None = None

    @model_validator(mode="after")
    def _nulls_follow_relevance(self) -> GoldLabel:
        judged = {"evidence_type": self.evidence_type, "direction": self.direction,
                  "strength": self.strength}
        if not self.relevant:
            set_ = [k for k, v in judged.items() if v is not None]
            if set_ or self.trigger is not None:
                raise ValueError(
                    f"relevant=false requires evidence_type, direction, strength and trigger to be "
                    f"null; got values for {', '.join(set_ + (['trigger'] if self.trigger else []))}")
        else:
            missing = [k for k, v in judged.items() if v is None]
            if missing:
                raise ValueError(f"relevant=true requires {', '.join(missing)}")
        return self


class Label(GoldLabel):
    """A full label as the labeler proposes it (spec field order: reason first is the prompt's job)."""

    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    rationale: Annotated[str, Field(max_length=1200)]
    quotes: list[str] = Field(default_factory=list)
    # the combined labeler's two opinions (classifier/combine/provenance.py); None otherwise.
    # Not part of the label's dump: it is provenance, stored in its own column.
    proposals: dict[str, Any] | None = Field(default=None, exclude=True)

    def judged(self) -> GoldLabel:
        """Label → the judged fields only, for comparison with gold or an editor's correction."""
        return GoldLabel(relevant=self.relevant, evidence_type=self.evidence_type,
                         direction=self.direction, strength=self.strength, trigger=self.trigger)


class LabelMeta(Record):
    """How a label was produced: what every label records beside its fields."""

    backend: str
    model: str
    prompt_hash: str
    schema_hash: str
    thesis_hash: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1


class RunCounts(Record):
    """What one `evidence run` did, per stage; stored in the runs table and printed."""

    feeds_polled: int = 0
    feeds_not_modified: int = 0
    feeds_failed: int = 0
    entries_new: int = 0
    articles_new: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0
    stories_new: int = 0
    pairs_routed: int = 0
    pairs_skipped: int = 0
    labels_new: int = 0
    labels_failed: int = 0
    labels_llm_skipped: int = 0  # combined labeler: labels the policy kept from the LLM
    started_at: datetime | None = None
