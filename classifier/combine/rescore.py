"""Re-scoring: pending labels an older encoder made are labeled again by the active one.

A combined label keeps the LLM's stored answer (the LLM is not asked again): the encoder judges
the pair anew and the combiner decides again. An encoder-only label is the new encoder's label.
The label's fields, proposals, disagreement, encoder version, model and cache key change and its
`version` is bumped, so an editor's open form on it is refused as stale rather than applied to a
label that changed under it. LLM-only labels and decided labels are never touched; a label whose
thesis changed since it was made (another thesis hash) is left as it is and counted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, insert, or_, select, update

from classifier.backends.base import Backend, CallRecord
from classifier.combine.provenance import disagreement
from classifier.config import ThesesFile
from classifier.label import _call_row, build_request, cache_key
from classifier.store.engine import write
from classifier.store.tables import articles, labels, llm_calls


def rescore_pending(engine: Engine, theses: ThesesFile, backend: Backend) -> dict[str, int]:
    """Active encoder backend (combined or encoder) → {rescored, unchanged_thesis, unknown_thesis}."""
    version = getattr(backend, "encoder_version", None)
    counts = {"rescored": 0, "thesis_changed": 0, "unknown_thesis": 0}
    if version is None:
        return counts
    with engine.connect() as c:
        rows = c.execute(
            select(labels.c.id, labels.c.pair_id, labels.c.thesis_id, labels.c.thesis_hash,
                   labels.c.backend, labels.c.proposals, labels.c.version, articles.c.title,
                   articles.c.text, articles.c.text_sha256)
            .join(articles, articles.c.id == labels.c.article_id)
            .where(labels.c.review_state == "pending",
                   labels.c.backend.in_(("combined", "encoder")),
                   or_(labels.c.encoder_version.is_(None), labels.c.encoder_version != version))
            .order_by(labels.c.id)).all()
    known = {t.id: t for t in theses.thesis}
    for r in rows:
        thesis = known.get(r.thesis_id)
        if thesis is None:
            counts["unknown_thesis"] += 1
            continue
        if thesis.content_hash != r.thesis_hash:
            counts["thesis_changed"] += 1
            continue
        _, request = build_request(thesis, title=r.title, text=r.text)
        calls: list[CallRecord] = []
        if r.backend == "combined" and hasattr(backend, "rescore"):
            label = backend.rescore(request, calls.append, r.proposals or {})
            name = "combined"
        else:
            encoder = getattr(backend, "encoder", backend)
            label = encoder.label(request, calls.append)
            name = "encoder"
        if name == "combined":
            llm = (r.proposals or {}).get("llm") or {}
            model = (f"{version}+{label.proposals['combiner'] or 'encoder-decides'}"
                     f"+{llm.get('model', 'no-llm')}+rescored")[:300]
        else:
            model = encoder.model
        key = cache_key(r.text_sha256, thesis.content_hash, request.prompt_hash,
                        request.schema_hash, f"{name}:{model}")
        with write(engine) as c:
            done = c.execute(update(labels).where(labels.c.id == r.id,
                                                  labels.c.review_state == "pending",
                                                  labels.c.version == r.version).values(
                relevant=label.relevant, evidence_type=_v(label.evidence_type),
                direction=_v(label.direction), strength=_v(label.strength),
                confidence=label.confidence, rationale=label.rationale, quotes=list(label.quotes),
                trigger=label.trigger, proposals=label.proposals,
                disagreement=disagreement(label.proposals), encoder_version=version,
                model=model, cache_key=key, version=r.version + 1)).rowcount
            if done:
                c.execute(insert(llm_calls), [_call_row(x, pair_id=r.pair_id, key=key)
                                              for x in calls])
                counts["rescored"] += 1
    return counts


def _v(x: Any) -> Any:
    return getattr(x, "value", x)


