"""Eval metrics against hand-computed cases: a perfect run, an all-wrong run, a known confusion
matrix, a known ECE, the official FNC-1 score, triggers and the bootstrap interval."""

from __future__ import annotations

import pytest

from classifier.evaluation import metrics
from classifier.evaluation.compare import compare_results, mcnemar
from classifier.evaluation.gold import ALL_FIELDS, GoldTarget
from classifier.evaluation.results import ItemResult

R = 30  # bootstrap resamples where the test checks values, not intervals: fast


def gold(rel, typ=None, dir_=None, st=None, trig=None, scored=ALL_FIELDS):
    return GoldTarget(relevant=rel, evidence_type=typ, direction=dir_, strength=st, trigger=trig,
                      scored=frozenset(scored))


def res(id_, g, pred=None, conf=0.9, origin="seed", stratum=None, quotes=(0, 0)):
    p = None if pred is None else {
        "relevant": pred[0], "evidence_type": pred[1], "direction": pred[2], "strength": pred[3],
        "trigger": pred[4] if len(pred) > 4 else None, "confidence": conf, "rationale": "",
        "quotes": []}
    return ItemResult(id=id_, thesis="t", origin=origin, stratum=stratum, gold=g, pred=p,
                      error_type=None if p else "invalid:schema",
                      quotes_total=quotes[0], quotes_found=quotes[1])


GOLDS = [
    gold(True, "direct", "supports", "strong", "up"),
    gold(True, "circumstantial", "undermines", "weak"),
    gold(True, "circumstantial", "neutral", "moderate"),
    gold(False),
    gold(True, "direct", "undermines", "moderate"),
    gold(False),
]


def as_pred(g):
    return (g.relevant, g.evidence_type, g.direction, g.strength, g.trigger)


def test_perfect_run_scores_one_everywhere():
    rs = [res(f"i{k}", g, as_pred(g), conf=1.0) for k, g in enumerate(GOLDS)]
    m = metrics.compute(rs, n_resamples=R)
    f = m["figures"]
    for name in ("relevant.accuracy", "relevant.macro_f1", "evidence_type.accuracy",
                 "evidence_type.macro_f1", "direction.accuracy", "direction.macro_f1",
                 "strength.accuracy", "strength.macro_f1", "strength.qwk", "exact_match",
                 "trigger.precision", "trigger.recall", "grounding_rate"):
        assert f[name]["value"] == 1.0, name
    assert f["failure_rate"]["value"] == 0.0
    assert f["ece"]["value"] == 0.0  # confidence 1.0, all right
    assert f["relevant.accuracy"]["n"] == 6 and f["direction.accuracy"]["n"] == 4
    assert f["exact_match"]["ci"] == [1.0, 1.0]


def test_all_wrong_run_scores_zero():
    flip_dir = {"supports": "undermines", "undermines": "neutral", "neutral": "supports"}
    flip_st = {"weak": "strong", "moderate": "weak", "strong": "weak"}
    rs = []
    for k, g in enumerate(GOLDS):
        if g.relevant:  # relevant gold → predicted not relevant: every field wrong
            pred = (False, None, None, None)
        else:
            pred = (True, "direct", "supports", "weak")
        rs.append(res(f"i{k}", g, pred, conf=1.0))
    f = metrics.compute(rs, n_resamples=R)["figures"]
    for name in ("relevant.accuracy", "relevant.macro_f1", "evidence_type.accuracy",
                 "direction.accuracy", "strength.accuracy", "exact_match", "trigger.recall"):
        assert f[name]["value"] == 0.0, name
    assert f["ece"]["value"] == 1.0
    # relevant but every judged field flipped: type/direction/strength wrong, κ negative
    rs2 = [res(f"j{k}", g, (True, "circumstantial" if g.evidence_type == "direct" else "direct",
                             flip_dir[g.direction], flip_st[g.strength]))
           for k, g in enumerate(GOLDS) if g.relevant]
    f2 = metrics.compute(rs2, n_resamples=R)["figures"]
    assert f2["evidence_type.accuracy"]["value"] == 0.0
    assert f2["direction.macro_f1"]["value"] == 0.0
    assert f2["strength.qwk"]["value"] < 0


def test_known_confusion_matrix_accuracy_and_macro_f1():
    # direction on 6 gold-relevant items; hand-computed:
    # gold:  S S S U U N ; pred: S S U U S (not relevant)
    pairs = [("supports", (True, "direct", "supports", "weak")),
             ("supports", (True, "direct", "supports", "weak")),
             ("supports", (True, "direct", "undermines", "weak")),
             ("undermines", (True, "direct", "undermines", "weak")),
             ("undermines", (True, "direct", "supports", "weak")),
             ("neutral", (False, None, None, None))]
    rs = [res(f"i{k}", gold(True, "direct", d, "weak"), p) for k, (d, p) in enumerate(pairs)]
    rs.append(res("fail", gold(True, "direct", "supports", "weak"), None))  # a failure
    cm = metrics.confusion(rs, "direction")
    assert cm["labels"] == ["supports", "undermines", "neutral", "none", "failed"]
    assert cm["matrix"] == [[2, 1, 0, 0, 1],
                            [1, 1, 0, 0, 0],
                            [0, 0, 0, 1, 0],
                            [0, 0, 0, 0, 0],
                            [0, 0, 0, 0, 0]]
    f = metrics.compute(rs, n_resamples=R)["figures"]
    assert f["direction.accuracy"]["value"] == pytest.approx(3 / 7, abs=1e-6)
    # F1: supports P=2/3 R=2/4 → 4/7; undermines P=1/2 R=1/2 → 1/2; neutral 0 → macro 15/42
    assert f["direction.macro_f1"]["value"] == pytest.approx((4 / 7 + 1 / 2 + 0) / 3, abs=1e-6)
    assert f["failure_rate"]["value"] == pytest.approx(1 / 7, abs=1e-6)
    assert f["relevant.accuracy"]["value"] == pytest.approx(5 / 7, abs=1e-6)


def test_known_ece_and_reliability_bins():
    g = gold(False)
    right, wrong = (False, None, None, None), (True, "direct", "supports", "weak")
    rs = [res("a", g, right, conf=0.95), res("b", g, wrong, conf=0.95),
          res("c", g, wrong, conf=0.15), res("d", g, wrong, conf=0.15),
          res("e", g, None)]  # a failure has no confidence: left out of ECE
    bins = metrics.reliability(rs)
    assert bins[9]["n"] == 2 and bins[9]["accuracy"] == 0.5
    assert bins[1]["n"] == 2 and bins[1]["accuracy"] == 0.0
    # |0.5 - 0.95| * 2/4 + |0 - 0.15| * 2/4 = 0.225 + 0.075
    assert metrics.ece(rs) == pytest.approx(0.30, abs=1e-9)
    assert metrics.reliability([res("x", g, right, conf=1.0)])[9]["n"] == 1  # 1.0 → last bin


def test_triggers_grounding_and_qwk_hand_computed():
    up = gold(True, "direct", "supports", "strong", "up")
    none = gold(True, "direct", "supports", "strong")
    rs = [res("a", up, (True, "direct", "supports", "strong", "up"), quotes=(2, 2)),
          res("b", up, (True, "direct", "supports", "strong", None), quotes=(1, 0)),
          res("c", none, (True, "direct", "supports", "strong", "up"), quotes=(0, 0)),
          res("d", none, (True, "direct", "supports", "strong", None), quotes=(3, 3))]
    assert metrics.trigger_precision(rs) == 0.5  # 1 right of 2 predicted
    assert metrics.trigger_recall(rs) == 0.5  # 1 found of 2 in gold
    assert metrics.grounding_rate(rs) == 0.75  # b has an ungrounded quote
    # κ_w on (gold, pred) strengths: sklearn's value equals the hand formula 1 - Σw·O / Σw·E
    s = [("weak", "weak"), ("moderate", "strong"), ("strong", "strong"), ("weak", "moderate")]
    rs2 = [res(f"s{k}", gold(True, "direct", "supports", a), (True, "direct", "supports", b))
           for k, (a, b) in enumerate(s)]
    # O (counts): (0,0),(1,2),(2,2),(0,1); w=(i-j)^2/4 → Σw·O = (1 + 1)/4 = 0.5
    # marginals gold [2,1,1], pred [1,1,2]; E = outer/4 → Σw·E = Σ g_i p_j (i-j)^2 / 16 = 26/16
    assert metrics.strength_qwk(rs2) == pytest.approx(1 - 0.5 / (26 / 16), abs=1e-9)


def test_official_fnc_score():
    pairs = [("agree", "agree"),          # 0.25 + 0.50 + 0.25 = 1.0
             ("agree", "discuss"),        # both related: 0.25
             ("unrelated", "unrelated"),  # 0.25
             ("unrelated", "disagree"),   # 0
             ("discuss", "unrelated"),    # 0
             ("disagree", None)]          # a failure: 0
    score, best = metrics.fnc_score_pairs(pairs)
    assert score == pytest.approx(1.5)
    assert best == pytest.approx(1 + 1 + 0.25 + 0.25 + 1 + 1)


def test_fields_outside_scored_are_not_scored():
    g = gold(True, dir_="supports", scored={"relevant", "direction"})
    rs = [res("a", g, (True, "direct", "supports", "weak"), origin="fnc1", stratum="agree"),
          res("b", gold(False, scored={"relevant", "direction"}), (False, None, None, None),
              origin="fnc1", stratum="unrelated")]
    f = metrics.compute(rs, n_resamples=R)["figures"]
    assert "strength.accuracy" not in f and "trigger.recall" not in f
    assert f["exact_match"]["value"] == 1.0
    assert f["fnc.score"]["value"] == 1.0


def test_bootstrap_interval_brackets_the_value():
    rs = [res(f"i{k}", gold(False), (k % 3 == 0, None, None, None)) for k in range(60)]
    fig = metrics.compute(rs, n_resamples=200)["figures"]["relevant.accuracy"]
    lo, hi = fig["ci"]
    assert fig["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert lo < fig["value"] < hi and hi - lo < 0.4


def test_compare_deltas_and_exact_mcnemar():
    g = gold(False)
    right, wrong = (False, None, None, None), (True, "direct", "supports", "weak")
    a = [res(f"i{k}", g, right if k < 10 else wrong) for k in range(20)]
    b = [res(f"i{k}", g, right if k < 18 else wrong) for k in range(20)]
    c = compare_results(a, b, n_resamples=R)
    assert c["figures"]["relevant.accuracy"]["delta"] == pytest.approx(0.4)
    lo, hi = c["figures"]["relevant.accuracy"]["ci"]
    assert 0 < lo <= 0.4 <= hi
    t = c["mcnemar"]["relevant"]
    assert (t["a_right_b_wrong"], t["a_wrong_b_right"]) == (0, 8)
    assert t["p_value"] == pytest.approx(2 * 0.5 ** 8)  # exact two-sided binomial
    assert len(c["changed"]) == 8 and c["changed"][0]["change"] > 0
    # worst first: a regression sorts before the improvements
    b[0] = res("i0", g, wrong)
    c2 = compare_results(a, b, n_resamples=R)
    assert c2["changed"][0]["id"] == "i0" and c2["changed"][0]["change"] < 0
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0
