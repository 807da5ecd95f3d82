"""Editors' decisions → gold items (`evidence gold export`), tagged `source = "review"`.

approved and corrected labels give their effective judged label (`labels.final`); rejected ones
become "not relevant" (a rejection says the proposal should not reach the ledger; the spec's
gold for that is relevant = false). Pending labels, and labels whose last decision was undone,
are not gold. `since` filters on the time of each label's latest decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from classifier.records import GoldLabel
from classifier.store.engine import as_utc
from classifier.store.tables import articles, decisions, labels

DECIDED = ("approved", "corrected", "rejected")
NOT_RELEVANT = {"relevant": False, "evidence_type": None, "direction": None, "strength": None,
                "trigger": None}


def _iso(ts: datetime | None) -> str | None:
    t = as_utc(ts)
    return t.isoformat().replace("+00:00", "Z") if t else None


def gold_label(review_state: str, final: dict[str, Any] | None) -> dict[str, Any]:
    """Review state + labels.final → the gold label dict (validated like any gold label)."""
    if review_state == "rejected":
        return dict(NOT_RELEVANT)
    if final is None:
        raise ValueError(f"a {review_state} label has no final judgment")
    return GoldLabel.model_validate(final).model_dump(mode="json")


def export_gold(engine: Engine, *, since: datetime | None = None,
                thesis_id: str | None = None) -> list[dict[str, Any]]:
    """Database (+ since, thesis) → gold items in the spec's format plus "source": "review",
    oldest decision first."""
    last = (select(decisions.c.label_id, func.max(decisions.c.created_at).label("decided_at"))
            .group_by(decisions.c.label_id).subquery())
    q = (select(labels.c.id, labels.c.thesis_id, labels.c.review_state, labels.c.final,
                last.c.decided_at, articles.c.title, articles.c.url, articles.c.site_name,
                articles.c.published, articles.c.text)
         .join(last, last.c.label_id == labels.c.id)
         .join(articles, articles.c.id == labels.c.article_id)
         .where(labels.c.review_state.in_(DECIDED))
         .order_by(last.c.decided_at, labels.c.id))
    if since is not None:
        q = q.where(last.c.decided_at >= since)
    if thesis_id:
        q = q.where(labels.c.thesis_id == thesis_id)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        out.append({
            "id": f"review-{r.id}", "thesis": r.thesis_id, "source": "review",
            "note": f"{r.review_state} {_iso(r.decided_at)}",
            "article": {"title": r.title or "", "source": r.site_name, "url": r.url,
                        "published": _iso(r.published), "text": r.text},
            "label": gold_label(r.review_state, r.final),
        })
    return out
