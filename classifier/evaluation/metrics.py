"""Figures of a run: per-field accuracy and macro-F1, κ, confusion matrices, ECE, costs.

Conventions (also in eval/README.md):
- A failed item (no label) counts as wrong for every field it is scored on; its prediction shows
  as the class "failed" in confusion matrices and it is left out of ECE and of the quadratic κ.
- evidence_type, direction and strength are scored only on items gold marks relevant; a
  prediction of "not relevant" there is the class "none" (wrong).
- Exact match: the prediction equals the gold on every field the gold scores.
- ECE: 10 equal-width confidence bins, correctness = exact match.
- Every headline figure carries a 95% percentile bootstrap interval over items
  (scipy.stats.bootstrap, resampling item indices, fixed seed).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

from classifier.evaluation.results import ItemResult

CLASSES: dict[str, list[str]] = {
    "relevant": ["relevant", "not relevant"],
    "evidence_type": ["direct", "circumstantial"],
    "direction": ["supports", "undermines", "neutral"],
    "strength": ["weak", "moderate", "strong"],
}
EXTRA = {"relevant": ["failed"]}
ORDINAL = {"weak": 0, "moderate": 1, "strong": 2}
FNC_STANCES = ["agree", "disagree", "discuss", "unrelated"]
FNC_ORIGINS = {"fnc1", "arc"}
LOWER_IS_BETTER = {"failure_rate", "ece"}
N_BINS = 10


# ---------------------------------------------------------------------------------------------
# Per-item views
# ---------------------------------------------------------------------------------------------


def _gold_class(r: ItemResult, field: str) -> str:
    v = r.gold.value(field)
    if field == "relevant":
        return "relevant" if v else "not relevant"
    return "none" if v is None else str(v)


def _pred_class(r: ItemResult, field: str) -> str:
    if r.failed:
        return "failed"
    v = r.pred_value(field)
    if field == "relevant":
        return "relevant" if v else "not relevant"
    return "none" if v is None else str(v)


def eligible(r: ItemResult, field: str) -> bool:
    """Whether an item is scored on a field (type/direction/strength need gold relevant)."""
    if field not in r.gold.scored:
        return False
    return field == "relevant" or r.gold.relevant is True


def field_pairs(results: Sequence[ItemResult], field: str) -> tuple[list[str], list[str]]:
    """Results + field → (gold classes, predicted classes) on the eligible items."""
    rows = [r for r in results if eligible(r, field)]
    return [_gold_class(r, field) for r in rows], [_pred_class(r, field) for r in rows]


def fnc_stance(relevant: bool | None, direction: str | None) -> str | None:
    """(relevant, direction) → FNC-1 stance, None when it has none (failure)."""
    if relevant is None:
        return None
    if not relevant:
        return "unrelated"
    return {"supports": "agree", "undermines": "disagree", "neutral": "discuss"}.get(direction or "")


# ---------------------------------------------------------------------------------------------
# Figures on a subset (each a function of the item list; bootstrapped below)
# ---------------------------------------------------------------------------------------------

Stat = Callable[[Sequence[ItemResult]], float]


def _quiet(f: Callable[[], float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(f())
        except ValueError:
            return math.nan


def accuracy(field: str) -> Stat:
    """Field → statistic: accuracy on eligible items (nan when none)."""
    def stat(rs: Sequence[ItemResult]) -> float:
        t, p = field_pairs(rs, field)
        return _quiet(lambda: accuracy_score(t, p)) if t else math.nan
    return stat


def macro_f1(field: str, labels: list[str]) -> Stat:
    """Field + gold classes of the whole run → statistic: macro-F1 over those classes."""
    def stat(rs: Sequence[ItemResult]) -> float:
        t, p = field_pairs(rs, field)
        if not t:
            return math.nan
        return _quiet(lambda: f1_score(t, p, labels=labels, average="macro", zero_division=0))
    return stat


def class_f1(field: str, label: str) -> Stat:
    """Field + one class → statistic: that class's F1 on eligible items."""
    def stat(rs: Sequence[ItemResult]) -> float:
        t, p = field_pairs(rs, field)
        if not t:
            return math.nan
        return _quiet(lambda: f1_score(t, p, labels=[label], average="macro", zero_division=0))
    return stat


def class_recall(field: str, label: str) -> Stat:
    """Field + one class → statistic: of the items gold puts in that class, the share predicted so."""
    def stat(rs: Sequence[ItemResult]) -> float:
        t, p = field_pairs(rs, field)
        hits = [b == label for a, b in zip(t, p, strict=True) if a == label]
        return sum(hits) / len(hits) if hits else math.nan
    return stat


def strength_qwk(rs: Sequence[ItemResult]) -> float:
    """Quadratic-weighted Cohen's κ of strength on items where gold and prediction both have one."""
    t, p = field_pairs(rs, "strength")
    pairs = [(ORDINAL[a], ORDINAL[b]) for a, b in zip(t, p, strict=True)
             if a in ORDINAL and b in ORDINAL]
    if len(pairs) < 2:
        return math.nan
    a, b = zip(*pairs, strict=True)
    return _quiet(lambda: cohen_kappa_score(a, b, labels=[0, 1, 2], weights="quadratic"))


def exact_match(rs: Sequence[ItemResult]) -> float:
    """Share of items whose prediction equals the gold on every scored field."""
    return float(np.mean([r.matches() for r in rs])) if rs else math.nan


def failure_rate(rs: Sequence[ItemResult]) -> float:
    """Share of items the labeler produced no label for."""
    return float(np.mean([r.failed for r in rs])) if rs else math.nan


def grounding_rate(rs: Sequence[ItemResult]) -> float:
    """Share of labeled items whose every quote occurs in the article text."""
    done = [r for r in rs if not r.failed]
    return float(np.mean([r.quotes_found == r.quotes_total for r in done])) if done else math.nan


def _trigger_counts(rs: Sequence[ItemResult]) -> tuple[int, int, int]:
    rows = [r for r in rs if "trigger" in r.gold.scored]
    tp = sum(1 for r in rows if r.gold.trigger is not None and r.pred_value("trigger") == r.gold.trigger)
    predicted = sum(1 for r in rows if r.pred_value("trigger") is not None)
    actual = sum(1 for r in rows if r.gold.trigger is not None)
    return tp, predicted, actual


def trigger_precision(rs: Sequence[ItemResult]) -> float:
    """Of the items the labeler tied to a trigger, the share tied to the gold trigger."""
    tp, predicted, _ = _trigger_counts(rs)
    return tp / predicted if predicted else math.nan


def trigger_recall(rs: Sequence[ItemResult]) -> float:
    """Of the items gold ties to a trigger, the share the labeler tied to the same trigger."""
    tp, _, actual = _trigger_counts(rs)
    return tp / actual if actual else math.nan


def reliability(rs: Sequence[ItemResult], n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Labeled items → per equal-width confidence bin: count, mean confidence, accuracy."""
    conf = np.array([float(r.pred["confidence"]) for r in rs if not r.failed])
    correct = np.array([r.matches() for r in rs if not r.failed], dtype=float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1) if conf.size else conf.astype(int)
    out = []
    for b in range(n_bins):
        m = bins == b
        n = int(m.sum())
        out.append({"bin": [b / n_bins, (b + 1) / n_bins], "n": n,
                    "confidence": float(conf[m].mean()) if n else None,
                    "accuracy": float(correct[m].mean()) if n else None})
    return out


def ece(rs: Sequence[ItemResult]) -> float:
    """Expected calibration error: Σ_bins (n_b / N) · |accuracy_b − mean confidence_b|."""
    bins = reliability(rs)
    total = sum(b["n"] for b in bins)
    if not total:
        return math.nan
    return sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"])


def _fnc_rows(rs: Sequence[ItemResult]) -> list[tuple[str, str | None]]:
    return [(r.stratum, None if r.failed else fnc_stance(r.pred_value("relevant"),
                                                          r.pred_value("direction")))
            for r in rs if r.origin in FNC_ORIGINS and r.stratum in FNC_STANCES]


def fnc_score_pairs(pairs: Sequence[tuple[str, str | None]]) -> tuple[float, float]:
    """(gold stance, predicted stance) pairs → (score, max score) by the official FNC-1 scorer:
    +0.25 for the right stance, +0.50 more if it is a related one, +0.25 when both are related."""
    related = {"agree", "disagree", "discuss"}
    score = best = 0.0
    for g, p in pairs:
        if g == p:
            score += 0.25
            if g != "unrelated":
                score += 0.50
        if g in related and p in related:
            score += 0.25
        best += 1.0 if g in related else 0.25
    return score, best


def fnc_relative(rs: Sequence[ItemResult]) -> float:
    """FNC-1 items → official score relative to the maximum (nan without FNC-format items)."""
    score, best = fnc_score_pairs(_fnc_rows(rs))
    return score / best if best else math.nan


def fnc_macro_f1(rs: Sequence[ItemResult]) -> float:
    """FNC-1 items → macro-F1 over the 4 stances (a failure counts as wrong)."""
    rows = _fnc_rows(rs)
    if not rows:
        return math.nan
    t = [g for g, _ in rows]
    p = [s or "failed" for _, s in rows]
    return _quiet(lambda: f1_score(t, p, labels=FNC_STANCES, average="macro", zero_division=0))


# ---------------------------------------------------------------------------------------------
# Bootstrap and the whole set of figures
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(results: Sequence[ItemResult], stat: Stat, *, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float | None, float | None]:
    """Items + statistic → 95% percentile bootstrap interval over items (None if undefined)."""
    if len(results) < 2:
        return None, None
    idx = np.arange(len(results))

    def on_indices(sample: np.ndarray) -> float:
        return stat([results[int(i)] for i in sample])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((idx,), on_indices, vectorized=False, n_resamples=n_resamples,
                        method="percentile", confidence_level=level,
                        random_state=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    dist = dist[~np.isnan(dist)]
    if dist.size < n_resamples / 2:  # undefined on most resamples: no honest interval
        return None, None
    alpha = (1 - level) / 2
    return float(np.percentile(dist, 100 * alpha)), float(np.percentile(dist, 100 * (1 - alpha)))


def headline_stats(results: Sequence[ItemResult]) -> dict[str, tuple[Stat, Callable[[], int]]]:
    """Results → {figure name: (statistic, count of items it is computed on)}; only the figures
    the run's gold can support (e.g. no strength figures on FNC-1)."""
    out: dict[str, tuple[Stat, Callable[[], int]]] = {}
    for field, classes in CLASSES.items():
        t, _ = field_pairs(results, field)
        if not t:
            continue
        labels = [c for c in classes if c in set(t)]
        n = len(t)
        out[f"{field}.accuracy"] = (accuracy(field), lambda n=n: n)
        out[f"{field}.macro_f1"] = (macro_f1(field, labels), lambda n=n: n)
        if field == "direction":  # the class the product exists to catch: undermining evidence
            for c in labels:
                k = sum(1 for x in t if x == c)
                out[f"direction.f1.{c}"] = (class_f1(field, c), lambda k=k: k)
            if "undermines" in labels:
                out["direction.recall.undermines"] = (class_recall(field, "undermines"),
                                                      lambda t=t: t.count("undermines"))
    if "strength.accuracy" in out:
        out["strength.qwk"] = (strength_qwk, lambda: sum(
            1 for a, b in zip(*field_pairs(results, "strength"), strict=True)
            if a in ORDINAL and b in ORDINAL))
    out["exact_match"] = (exact_match, lambda: len(results))
    if any("trigger" in r.gold.scored for r in results):
        out["trigger.precision"] = (trigger_precision, lambda: _trigger_counts(results)[1])
        out["trigger.recall"] = (trigger_recall, lambda: _trigger_counts(results)[2])
    out["grounding_rate"] = (grounding_rate, lambda: sum(1 for r in results if not r.failed))
    out["failure_rate"] = (failure_rate, lambda: len(results))
    out["ece"] = (ece, lambda: sum(1 for r in results if not r.failed))
    if _fnc_rows(results):
        out["fnc.score"] = (fnc_relative, lambda: len(_fnc_rows(results)))
        out["fnc.macro_f1"] = (fnc_macro_f1, lambda: len(_fnc_rows(results)))
    return out


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def confusion(results: Sequence[ItemResult], field: str) -> dict[str, Any] | None:
    """Results + field → {"labels", "matrix"} (rows gold, columns predicted), None if unscored."""
    t, p = field_pairs(results, field)
    if not t:
        return None
    extra = ["failed"] if field == "relevant" else ["none", "failed"]
    labels = [c for c in CLASSES[field] + extra if c in set(t) | set(p) or c in CLASSES[field]]
    m = confusion_matrix(t, p, labels=labels)
    return {"labels": labels, "matrix": m.tolist()}


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "total": 0.0}
    a = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "total": float(a.sum())}


def compute(results: Sequence[ItemResult], *, n_resamples: int = 1000,
            seed: int = 0) -> dict[str, Any]:
    """Results → every figure of a run: headline figures with intervals, confusion matrices,
    reliability bins, per-origin breakdown, and cost/tokens/latency percentiles per item."""
    results = list(results)
    figures: dict[str, Any] = {}
    for name, (stat, count) in headline_stats(results).items():
        lo, hi = bootstrap_ci(results, stat, n_resamples=n_resamples, seed=seed)
        figures[name] = {"value": _clean(stat(results)), "ci": [_clean(lo), _clean(hi)]
                         if lo is not None else None, "n": count()}
    confusions = {f: c for f in CLASSES if (c := confusion(results, f)) is not None}
    tp, predicted, actual = _trigger_counts(results)
    return {
        "n_items": len(results),
        "n_failed": sum(1 for r in results if r.failed),
        "failures": dict(Counter(r.error_type or "unknown" for r in results if r.failed)
                         .most_common()),
        "figures": figures,
        "confusion": confusions,
        "reliability": reliability(results),
        "triggers": {"true_positives": tp, "predicted": predicted, "gold": actual},
        "fnc": dict(zip(("score", "max"), fnc_score_pairs(_fnc_rows(results)), strict=True))
        if _fnc_rows(results) else None,
        "cost": {
            "tokens": _percentiles([r.tokens_in + r.tokens_out for r in results]),
            "tokens_in": _percentiles([r.tokens_in for r in results]),
            "tokens_out": _percentiles([r.tokens_out for r in results]),
            "cost_usd": _percentiles([r.cost_usd for r in results]),
            "latency_ms": _percentiles([r.latency_ms for r in results]),
        },
        "errors": _error_counts(results),
        "bootstrap": {"method": "percentile", "resamples": n_resamples, "seed": seed,
                      "level": 0.95},
    }


def _error_counts(results: Sequence[ItemResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        if r.failed:
            out[r.error_type or "unknown"] = out.get(r.error_type or "unknown", 0) + 1
    return out
