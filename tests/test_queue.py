"""Stage 6: queue order and filters, decisions, claims, stale forms, double submits, undo, audit."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from classifier import queue
from classifier.errors import Conflict, NotFound, ReviewError
from classifier.queue import QueueFilter
from classifier.store import write
from classifier.store.engine import utcnow
from classifier.store.tables import decisions, labels
from tests.review_seed import fnc_articles, seed


@pytest.fixture
def filled(engine, corpora):
    """12 FNC-1 articles × 3 theses = 36 pending labels."""
    ids = seed(engine, list(fnc_articles(corpora, 12)))
    return engine, ids


def _label(engine, label_id):
    with engine.connect() as c:
        return c.execute(select(labels).where(labels.c.id == label_id)).one()


def _decisions(engine):
    with engine.connect() as c:
        return c.execute(select(decisions).order_by(decisions.c.id)).all()


def _contested(it):
    return 0 if (it.disagreement or 0) >= 1 or it.direction == "undermines" else 1


def test_order_trigger_candidates_then_strength_contested_confidence_newest(filled):
    """Review order: trigger candidates, strength, disagreeing or undermining proposals first,
    confidence, newest queued."""
    engine, ids = filled
    with engine.connect() as c:
        items, total = queue.list_queue(c, QueueFilter(), limit=100)
    assert total == len(ids) == 36 and len(items) == 36
    rank = {"strong": 0, "moderate": 1, "weak": 2, None: 3}
    keys = [(it.trigger is None, rank[it.strength], _contested(it), -it.confidence)
            for it in items]
    assert keys == sorted(keys)
    assert items[0].trigger is not None  # the seed makes some trigger candidates
    assert {_contested(it) for it in items} == {0, 1}  # the seed undermines some
    # ties on the first four keys: newest queued first
    for i in range(len(items) - 1):
        if keys[i] == keys[i + 1]:
            assert items[i].label_id > items[i + 1].label_id


def test_queue_order_uses_its_index(filled):
    engine, _ = filled
    with engine.connect() as c:
        q = (select(labels.c.id).where(labels.c.review_state == "pending")
             .order_by(*queue.ORDER).limit(50))
        sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(r) for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "ix_labels_queue" in plan and "TEMP B-TREE" not in plan, plan
        else:
            c.exec_driver_sql("SET enable_seqscan = off")  # 36 rows: force the planner's hand
            plan = " ".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + sql))
            assert "ix_labels_queue" in plan and "Sort" not in plan, plan


def test_filters(filled):
    engine, ids = filled
    with engine.connect() as c:
        def n(**kw):
            return queue.list_queue(c, QueueFilter(**kw))[1]
        assert n(thesis="oss-parity") == 12
        assert n(evidence_type="direct") + n(evidence_type="circumstantial") + \
            n(evidence_type="none") == 36
        assert n(direction="supports", thesis="ev-share-eu") == len(
            [it for it in queue.list_queue(c, QueueFilter(thesis="ev-share-eu"), limit=99)[0]
             if it.direction == "supports"])
        assert n(feed="wire") == 36 and n(feed="elsewhere") == 0
        assert n(state="approved") == 0
        items = queue.list_queue(c, QueueFilter(), limit=99)[0]
        days = sorted({it.published.date() for it in items})
        assert n(since=days[-1]) == len([i for i in items if i.published.date() >= days[-1]])
        assert n(until=days[0]) == len([i for i in items if i.published.date() <= days[0]])
        assert n(since=date(2030, 1, 1)) == 0
    with pytest.raises(ReviewError, match="direction"):
        QueueFilter.from_query({"direction": "sideways"})
    flt = QueueFilter.from_query({"thesis": "oss-parity", "state": "", "since": "2026-11-02"})
    assert flt.to_query() == {"thesis": "oss-parity", "since": "2026-11-02"}


def test_approve_correct_reject_write_decisions(filled):
    engine, ids = filled
    a, b, c = ids[:3]
    d1 = queue.decide(engine, a, user="ann", action="approve", version=1, key="k1")
    assert (d1.action, d1.from_state, d1.to_state, d1.user_name) == (
        "approve", "pending", "approved", "ann")
    row = _label(engine, a)
    assert row.review_state == "approved" and row.version == 2
    assert row.final == queue.proposed(row) == d1.after == d1.before

    fields = {"relevant": True, "evidence_type": "circumstantial", "direction": "supports",
              "strength": "weak", "trigger": None}
    d2 = queue.decide(engine, b, user="ann", action="correct", version=1, key="k2",
                      fields=fields, note="only a proxy")
    row = _label(engine, b)
    assert row.review_state == "corrected" and row.final == fields == d2.after
    assert d2.before == queue.proposed(row) and d2.note == "only a proxy"

    d3 = queue.decide(engine, c, user="bob", action="reject", version=1, note="off topic")
    assert _label(engine, c).review_state == "rejected" and _label(engine, c).final is None
    assert d3.after is None
    assert [d.action for d in _decisions(engine)] == ["approve", "correct", "reject"]


def test_correct_validates_fields_and_equal_correction_is_approve(filled):
    engine, ids = filled
    with pytest.raises(ReviewError, match="relevant=false requires"):
        queue.decide(engine, ids[0], user="ann", action="correct", version=1,
                     fields={"relevant": False, "evidence_type": "direct"})
    with pytest.raises(ReviewError):
        queue.decide(engine, ids[0], user="ann", action="correct", version=1,
                     fields={"relevant": True, "evidence_type": "sideways",
                             "direction": "supports", "strength": "weak"})
    assert _decisions(engine) == []
    same = queue.proposed(_label(engine, ids[0]))
    d = queue.decide(engine, ids[0], user="ann", action="correct", version=1, fields=same)
    assert (d.action, d.to_state) == ("approve", "approved")


def test_stale_form_is_a_conflict_and_double_submit_is_one_decision(filled):
    engine, ids = filled
    first = queue.decide(engine, ids[0], user="ann", action="approve", version=1, key="form-1")
    again = queue.decide(engine, ids[0], user="ann", action="approve", version=1, key="form-1")
    assert again.id == first.id and again.replayed and not first.replayed
    with pytest.raises(Conflict, match="changed since your form"):
        queue.decide(engine, ids[0], user="ann", action="reject", version=1, key="form-2")
    with pytest.raises(Conflict, match="another user"):
        queue.decide(engine, ids[0], user="bob", action="approve", version=2, key="form-1")
    assert len(_decisions(engine)) == 1
    with pytest.raises(NotFound):
        queue.decide(engine, 10_000, user="ann", action="approve", version=1)


def test_double_submit_racing_threads_make_one_decision(filled):
    engine, ids = filled
    results, errors = [], []
    barrier = threading.Barrier(4)

    def submit():
        barrier.wait()
        try:
            results.append(queue.decide(engine, ids[1], user="ann", action="reject", version=1,
                                        key="same-form"))
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({d.id for d in results}) == 1 and len(_decisions(engine)) == 1


def test_claims_two_editors_never_share_an_item(filled):
    engine, ids = filled
    a = queue.claim_next(engine, "ann")
    b = queue.claim_next(engine, "bob")
    assert a and b and a != b
    assert queue.claim_next(engine, "ann") == a  # still hers: her own claim is renewed
    assert queue.claim(engine, a, "bob") == "ann"
    with pytest.raises(Conflict, match="ann is reviewing"):
        queue.decide(engine, a, user="bob", action="approve", version=1)
    # an expired lease frees the item
    with write(engine) as c:
        c.execute(labels.update().where(labels.c.id == a)
                  .values(claim_until=utcnow() - timedelta(seconds=1)))
    assert queue.claim(engine, a, "bob") is None
    assert _label(engine, a).claimed_by == "bob"
    assert _label(engine, b).claimed_by is None  # one claim at a time: bob's older one released
    with pytest.raises(Conflict):
        queue.decide(engine, a, user="ann", action="approve", version=1)


def test_claims_under_concurrency(filled):
    engine, ids = filled
    got: dict[str, list[int]] = {"ann": [], "bob": [], "cy": []}
    barrier = threading.Barrier(3)

    def editor(name):
        barrier.wait()
        for _ in range(6):
            label_id = queue.claim_next(engine, name)
            assert label_id is not None
            got[name].append(label_id)
            queue.decide(engine, label_id, user=name, action="approve",
                         version=_label(engine, label_id).version)

    threads = [threading.Thread(target=editor, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everyone = [i for v in got.values() for i in v]
    assert len(everyone) == 18 and len(set(everyone)) == 18
    assert len(_decisions(engine)) == 18


def test_skip_keeps_pending_and_moves_on(filled):
    engine, ids = filled
    first = queue.claim_next(engine, "ann")
    d = queue.decide(engine, first, user="ann", action="skip", version=1)
    assert (d.from_state, d.to_state) == ("pending", "pending")
    row = _label(engine, first)
    assert row.review_state == "pending" and row.final is None and row.claimed_by is None
    second = queue.claim_next(engine, "ann")
    assert second != first
    assert queue.claim_next(engine, "bob") == first  # skipping is personal
    with pytest.raises(ReviewError, match="only pending"):
        queue.decide(engine, second, user="ann", action="approve", version=1)
        queue.decide(engine, second, user="ann", action="skip", version=2)


def test_undo_restores_and_is_itself_a_decision(filled):
    engine, ids = filled
    queue.decide(engine, ids[0], user="ann", action="approve", version=1)
    fields = {"relevant": False}
    queue.decide(engine, ids[1], user="ann", action="correct", version=1, fields=fields)
    u1 = queue.undo_last(engine, user="ann", key="u1")
    assert queue.undo_last(engine, user="ann", key="u1").id == u1.id  # double press
    assert (u1.action, u1.label_id, u1.from_state, u1.to_state) == (
        "undo", ids[1], "corrected", "pending")
    row = _label(engine, ids[1])
    assert row.review_state == "pending" and row.final is None and row.claimed_by == "ann"
    u2 = queue.undo_last(engine, user="ann")
    assert u2.label_id == ids[0] and _label(engine, ids[0]).review_state == "pending"
    with pytest.raises(NotFound):
        queue.undo_last(engine, user="ann")
    # re-decide after undo, then someone else changes it: undo refuses
    queue.decide(engine, ids[0], user="ann", action="reject", version=3)
    queue.decide(engine, ids[0], user="bob", action="approve", version=4)
    with pytest.raises(Conflict, match="decided again"):
        queue.undo_last(engine, user="ann")
    acts = [(d.user_name, d.action) for d in _decisions(engine)]
    assert acts == [("ann", "approve"), ("ann", "correct"), ("ann", "undo"), ("ann", "undo"),
                    ("ann", "reject"), ("bob", "approve")]


def test_undo_of_a_change_of_mind_restores_the_earlier_final(filled):
    engine, ids = filled
    fields = {"relevant": True, "evidence_type": "direct", "direction": "supports",
              "strength": "weak"}
    queue.decide(engine, ids[2], user="ann", action="correct", version=1, fields=fields)
    queue.decide(engine, ids[2], user="ann", action="reject", version=2)
    queue.undo_last(engine, user="ann")
    row = _label(engine, ids[2])
    assert row.review_state == "corrected" and row.final == {**fields, "trigger": None}


def test_decisions_are_append_only_in_the_database(filled):
    engine, ids = filled
    queue.decide(engine, ids[0], user="ann", action="approve", version=1)
    for sql in ("UPDATE decisions SET user_name = 'mallory'", "DELETE FROM decisions"):
        with pytest.raises(DBAPIError, match="append-only"):
            with write(engine) as c:
                c.execute(text(sql))
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with write(engine) as c:
                c.execute(text("TRUNCATE decisions"))
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(decisions)).scalar() == 1
        assert c.execute(select(decisions.c.user_name)).scalar() == "ann"


def test_history_neighbours_counts_and_evidence(filled):
    engine, ids = filled
    with engine.connect() as c:
        order = [it.label_id for it in queue.list_queue(c, QueueFilter(), limit=99)[0]]
        assert queue.neighbours(c, QueueFilter(), order[1]) == (order[0], order[2])
        assert queue.neighbours(c, QueueFilter(), order[0]) == (None, order[1])
    queue.decide(engine, order[0], user="ann", action="approve", version=1)
    queue.decide(engine, order[1], user="bob", action="reject", version=1)
    with engine.connect() as c:
        assert [d.user_name for d in queue.history(c)] == ["bob", "ann"]
        assert [d.action for d in queue.history(c, user="ann")] == ["approve"]
        total = sum(sum(v.values()) for v in queue.counts(c).values())
        assert total == 36
        thesis = _label(engine, order[0]).thesis_id
        assert [i.label_id for i in queue.approved_evidence(c, thesis)] == [order[0]]
