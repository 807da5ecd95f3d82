"""End to end with the real embedded model (Qwen2.5-Coder-1.5B, assembled from the pinned
wheels): the demo site is fetched, extracted, deduped, routed and labeled, and the labels wait
in the review queue. Slow on CPU (about 10-15 s per call), so only two pairs are labeled."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from classifier.config import Settings
from classifier.store.tables import labels, llm_calls, pairs

pytestmark = pytest.mark.model


def test_fetch_route_label_queue_on_demo_set(engine):
    from classifier import model
    from classifier.backends.local import LocalBackend
    from classifier.demo import run_demo

    backend = LocalBackend(settings=Settings().label)
    assert backend.model == model.MODEL_NAME and model.is_installed()
    report = run_demo(engine, Settings(), backend=backend, label_limit=2)
    c = report.counts
    assert c.articles_new > 0 and c.pairs_routed >= 2
    assert c.labels_new + c.labels_failed == 2
    with engine.connect() as conn:
        labs = conn.execute(select(labels)).mappings().all()
        calls = conn.execute(select(llm_calls)).mappings().all()
        states = conn.execute(select(pairs.c.state)).scalars().all()
    assert len(labs) == c.labels_new and states.count("pending") == c.pairs_routed - 2
    for lab in labs:
        assert lab["review_state"] == "pending" and lab["backend"] == "local"
        assert lab["model"] == model.MODEL_NAME and lab["tokens_in"] > 0 and lab["attempts"] >= 1
    assert len(calls) >= 2 and all(x["tokens_in"] > 0 for x in calls)
