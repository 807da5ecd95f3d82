"""Editors see disagreement: the queue's disagree filter and sort, contested labels ranked above
agreeing confirmations, both opinions on the item page, approved evidence by direction."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from classifier import ledger, queue
from classifier.queue import QueueFilter
from classifier.store import write
from classifier.store.tables import labels
from tests.review_seed import fnc_articles, seed, set_opinions
from tests.web_support import login, make_desk

SUPPORTS = dict(relevant=True, evidence_type="direct", direction="supports", strength="moderate")
THESIS = "oss-parity"


@pytest.fixture
def opinions(engine, corpora):
    """6 pending labels, all direct supports moderate, varied confidence, no trigger candidates:
    [1] disagrees on direction, [3] on direction and strength, [4] agrees, [5] LLM skipped,
    [2] undermines (one labeler), [0] one labeler, supports."""
    ids = seed(engine, list(fnc_articles(corpora, 6)), theses=(THESIS,),
               proposals=[dict(SUPPORTS, trigger=None)])
    set_opinions(engine, ids[1], encoder=dict(SUPPORTS, direction="undermines"), llm=SUPPORTS)
    set_opinions(engine, ids[3], encoder=dict(SUPPORTS, direction="undermines", strength="weak"),
                 llm=SUPPORTS)
    set_opinions(engine, ids[4], encoder=SUPPORTS, llm=SUPPORTS)
    set_opinions(engine, ids[5], encoder=SUPPORTS, llm=None, llm_status="skipped",
                 llm_reason="llm = uncertain: the encoder is sure (0.93 >= 0.80)")
    with write(engine) as c:
        c.execute(labels.update().where(labels.c.id == ids[2]).values(direction="undermines"))
    return engine, ids


def _order(engine, flt):
    with engine.connect() as c:
        return [it.label_id for it in queue.list_queue(c, flt, limit=99)[0]]


def _confidence(engine, ids):
    with engine.connect() as c:
        return dict(c.execute(select(labels.c.id, labels.c.confidence)
                              .where(labels.c.id.in_(ids))).all())


def test_disagree_filter_returns_exactly_the_disagreeing_labels(opinions):
    engine, ids = opinions
    with engine.connect() as c:
        items, total = queue.list_queue(c, QueueFilter(disagree="yes"))
        rest, n_rest = queue.list_queue(c, QueueFilter(disagree="no"))
    assert total == 2 and {it.label_id for it in items} == {ids[1], ids[3]}
    assert {it.label_id: it.disagree for it in items} == {
        ids[1]: ("direction",), ids[3]: ("direction", "strength")}
    assert n_rest == 4 and {it.label_id for it in rest} == {ids[0], ids[2], ids[4], ids[5]}
    assert {it.label_id: it.disagreement for it in rest}[ids[4]] == 0  # agree: 0, not null
    flt = QueueFilter.from_query({"disagree": "yes", "sort": "disagreement", "thesis": ""})
    assert flt.to_query() == {"disagree": "yes", "sort": "disagreement"}
    assert QueueFilter.from_query(flt.to_query()) == flt
    assert QueueFilter.from_query({"sort": "review"}).to_query() == {}


def test_sort_by_disagreement_puts_the_most_disagreeing_first(opinions):
    engine, ids = opinions
    flt = QueueFilter(sort="disagreement")
    order = _order(engine, flt)
    assert order[:2] == [ids[3], ids[1]]  # two fields, then one
    assert order[2:] == [i for i in _order(engine, QueueFilter()) if i not in order[:2]]
    with engine.connect() as c:  # j/k and /next follow the same order
        assert queue.neighbours(c, flt, order[1]) == (order[0], order[2])
        assert queue.neighbours(c, flt, order[-1]) == (order[-2], None)
    assert queue.claim_next(engine, "ann", flt) == ids[3]


def test_default_order_ranks_contested_above_agreeing_confirmations_of_the_same_strength(
        opinions):
    engine, ids = opinions
    conf = _confidence(engine, ids)
    contested = {ids[1], ids[2], ids[3]}  # disagree, undermine, disagree
    order = _order(engine, QueueFilter())
    assert set(order[:3]) == contested and set(order[3:]) == set(ids) - contested
    assert order == sorted(ids, key=lambda i: (i not in contested, -conf[i], -i))
    # the new key decides: an agreeing confirmation is more confident than a contested one
    assert max(conf[i] for i in set(ids) - contested) > min(conf[i] for i in contested)


def test_direction_counts_use_the_judged_direction(opinions):
    engine, ids = opinions
    with engine.connect() as c:
        assert ledger.direction_counts(c, THESIS) == {"supports": 0, "undermines": 0,
                                                      "neutral": 0}

    def correct(label_id, **fields):
        queue.decide(engine, label_id, user="ann", action="correct", version=1,
                     fields={**SUPPORTS, "trigger": None, **fields})

    queue.decide(engine, ids[0], user="ann", action="approve", version=1)  # supports
    correct(ids[1], direction="undermines")  # proposed supports, judged undermines
    queue.decide(engine, ids[2], user="ann", action="approve", version=1)  # undermines
    correct(ids[3], direction="neutral")
    queue.decide(engine, ids[4], user="ann", action="correct", version=1,
                 fields={"relevant": False})  # not evidence
    queue.decide(engine, ids[5], user="ann", action="reject", version=1)
    with engine.connect() as c:
        assert ledger.direction_counts(c, THESIS) == {"supports": 1, "undermines": 2,
                                                      "neutral": 1}
        assert ledger.direction_counts(c, "ev-share-eu") == {"supports": 0, "undermines": 0,
                                                             "neutral": 0}


def _counts_on_page(html):
    return {d: int(n) for d, n in re.findall(
        r'<span data-direction="(\w+)"><strong>(\d+)</strong>', html)}


def test_thesis_page_counts_approved_evidence_by_direction(opinions):
    engine, ids = opinions
    c = login(make_desk(engine).client(), "ann")
    queue.decide(engine, ids[0], user="ann", action="approve", version=1)
    page = c.get(f"/thesis/{THESIS}").text
    assert _counts_on_page(page) == {"supports": 1, "undermines": 0, "neutral": 0}
    assert 'id="one-sided"' in page and "nothing undermines it yet" in page
    queue.decide(engine, ids[1], user="ann", action="correct", version=1,
                 fields={**SUPPORTS, "direction": "undermines"})
    page = c.get(f"/thesis/{THESIS}").text
    assert _counts_on_page(page) == {"supports": 1, "undermines": 1, "neutral": 0}
    assert 'id="one-sided"' not in page


def test_item_and_queue_pages_show_the_two_opinions_escaped(opinions):
    engine, ids = opinions
    set_opinions(engine, ids[5], encoder=SUPPORTS, llm=None, llm_status="failed",
                 llm_reason='<script>alert("x")</script> timed out')
    c = login(make_desk(engine).client(), "ann")
    page = c.get(f"/item/{ids[3]}").text
    block = page[page.index('id="opinions"'):page.index("</section>", page.index('id="opinions"'))]
    rows = re.findall(r'<tr data-field="(\w+)"><th scope="row">\w+</th>\s*'
                      r'<td class="encoder">(\w+) <small>([\d.]+)</small></td>\s*'
                      r'<td class="llm">(\w+) <small>([\d.]+)</small></td>\s*'
                      r'<td class="decided">(\w+)</td>', block)
    assert rows == [("direction", "undermines", "0.80", "supports", "0.80", "llm"),
                    ("strength", "weak", "0.80", "moderate", "0.80", "llm")]
    assert "encoder and LLM agree" in c.get(f"/item/{ids[4]}").text
    failed = c.get(f"/item/{ids[5]}").text
    assert "LLM failed: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; timed out" in failed
    assert "<script>alert" not in failed
    assert 'id="opinions"' not in c.get(f"/item/{ids[0]}").text  # one labeler: nothing new
    q = c.get("/queue?disagree=yes&sort=disagreement").text
    assert re.findall(r'data-href="/item/(\d+)', q) == [str(ids[3]), str(ids[1])]
    assert "≠ direction, strength" in q and "≠ direction<" in q
    assert re.search(r'<option value="disagreement" selected>', q)
    assert 'href="/next?disagree=yes&amp;sort=disagreement"' in q
