"""Decided labels as gold-format records: what `evidence review export` writes and what
`evidence model train --from-decisions` learns from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from classifier.errors import ReviewError
from classifier.queue import STATES, proposed
from classifier.store.engine import as_utc
from classifier.store.tables import articles, decisions, labels


def export(conn: Connection, states: tuple[str, ...] = ("approved",)) -> list[dict[str, Any]]:
    """Review states → one gold-format record per label in them (article, judged label, who, when).

    `label` is the effective judged label (labels.final; the proposal for rejected ones is under
    `proposed`), so approved/corrected rows can be used as gold data directly.
    """
    bad = set(states) - set(STATES)
    if bad:
        raise ReviewError(f"unknown state(s) {sorted(bad)}; use {', '.join(STATES)}")
    last = (select(decisions.c.label_id, func.max(decisions.c.id).label("decision_id"))
            .where(decisions.c.action != "skip").group_by(decisions.c.label_id).subquery())
    rows = conn.execute(
        select(labels, articles.c.title, articles.c.url, articles.c.site_name,
               articles.c.published, articles.c.text, last.c.decision_id,
               decisions.c.user_name.label("decided_by"),
               decisions.c.created_at.label("decided_at"),
               decisions.c.note)
        .select_from(labels.join(articles, articles.c.id == labels.c.article_id)
                     .outerjoin(last, last.c.label_id == labels.c.id)
                     .outerjoin(decisions, decisions.c.id == last.c.decision_id))
        .where(labels.c.review_state.in_(states)).order_by(labels.c.id)).all()
    out = []
    for r in rows:
        published = as_utc(r.published)
        out.append({
            "id": f"label-{r.id}", "thesis": r.thesis_id,
            "article": {"title": r.title, "source": r.site_name, "url": r.url,
                        "published": published.isoformat() if published else None,
                        "text": r.text},
            "label": r.final,
            "review_state": r.review_state,
            "proposed": {**proposed(r), "confidence": r.confidence, "rationale": r.rationale,
                         "quotes": r.quotes, "model": r.model, "prompt_hash": r.prompt_hash},
            "decided_by": r.decided_by,
            "decided_at": as_utc(r.decided_at).isoformat() if r.decided_at else None,
            "note": r.note,
        })
    return out
