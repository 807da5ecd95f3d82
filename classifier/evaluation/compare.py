"""Two runs on the same items → per-figure deltas with intervals, exact McNemar tests, and the
items whose label changed, worst first.

Only items present in both runs (same id and same gold) are compared, so a partial run compares
on what it has. The delta interval is a paired percentile bootstrap: the same resampled items
feed both runs' figure. McNemar is exact (scipy's binomtest on the discordant pairs).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap

from classifier.errors import ConfigError
from classifier.evaluation import metrics
from classifier.evaluation.gold import FIELDS
from classifier.evaluation.results import ItemResult
from classifier.evaluation.runner import load_results, load_run


def _paired(a: list[ItemResult], b: list[ItemResult]) -> tuple[list[ItemResult], list[ItemResult]]:
    by_id = {r.id: r for r in b}
    pa, pb = [], []
    for r in a:
        other = by_id.get(r.id)
        if other is not None and other.gold == r.gold:
            pa.append(r)
            pb.append(other)
    return pa, pb


def delta_ci(a: list[ItemResult], b: list[ItemResult], stat: metrics.Stat, *,
             n_resamples: int = 1000, seed: int = 0) -> tuple[float | None, float | None]:
    """Paired results + statistic → 95% percentile bootstrap interval of stat(b) − stat(a)."""
    if len(a) < 2:
        return None, None
    idx = np.arange(len(a))

    def diff(sample: np.ndarray) -> float:
        ids = [int(i) for i in sample]
        return stat([b[i] for i in ids]) - stat([a[i] for i in ids])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((idx,), diff, vectorized=False, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    dist = dist[~np.isnan(dist)]
    if dist.size < n_resamples / 2:
        return None, None
    return float(np.percentile(dist, 2.5)), float(np.percentile(dist, 97.5))


def mcnemar(a_correct: list[bool], b_correct: list[bool]) -> dict[str, Any]:
    """Paired correctness → exact McNemar test: discordant counts and two-sided p-value."""
    a_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    n = a_only + b_only
    p = binomtest(b_only, n, 0.5).pvalue if n else 1.0
    return {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only, "p_value": float(p)}


def _correct(r: ItemResult, field: str) -> bool:
    return metrics._pred_class(r, field) == metrics._gold_class(r, field)


def _score(r: ItemResult) -> int:
    """How many scored fields an item got right (failures: none)."""
    fields = [f for f in FIELDS if f in r.gold.scored and
              (f in ("relevant", "trigger") or r.gold.relevant is True)]
    return sum(1 for f in fields if r.pred is not None and r.pred.get(f) == r.gold.value(f))


def _judged(r: ItemResult) -> dict[str, Any] | None:
    return None if r.pred is None else {f: r.pred.get(f) for f in FIELDS}


def compare_results(a: list[ItemResult], b: list[ItemResult], *,
                    n_resamples: int = 1000) -> dict[str, Any]:
    """Two runs' results → figures side by side, deltas with intervals, McNemar, changed items."""
    pa, pb = _paired(a, b)
    if not pa:
        raise ConfigError("the two runs share no items (same id and gold); nothing to compare")
    stats_a = metrics.headline_stats(pa)
    stats_b = metrics.headline_stats(pb)
    figures = {}
    for name, (stat, count) in stats_a.items():
        if name not in stats_b:
            continue
        va, vb = stat(pa), stat(pb)
        lo, hi = delta_ci(pa, pb, stat, n_resamples=n_resamples)
        clean = (lambda x: None if x is None or math.isnan(x) else round(x, 6))
        figures[name] = {"a": clean(va), "b": clean(vb),
                         "delta": clean(vb - va) if not (math.isnan(va) or math.isnan(vb)) else None,
                         "ci": [clean(lo), clean(hi)] if lo is not None else None, "n": count(),
                         "lower_is_better": name in metrics.LOWER_IS_BETTER}
    tests = {}
    for field in metrics.CLASSES:
        rows = [i for i, r in enumerate(pa) if metrics.eligible(r, field)]
        if rows:
            tests[field] = mcnemar([_correct(pa[i], field) for i in rows],
                                   [_correct(pb[i], field) for i in rows])
    tests["exact_match"] = mcnemar([r.matches() for r in pa], [r.matches() for r in pb])
    changed = []
    for ra, rb in zip(pa, pb, strict=True):
        if _judged(ra) == _judged(rb) and ra.error_type == rb.error_type:
            continue
        changed.append({"id": ra.id, "thesis": ra.thesis,
                        "gold": ra.gold.model_dump(mode="json", exclude={"scored"}),
                        "a": _judged(ra) or {"failed": ra.error_type},
                        "b": _judged(rb) or {"failed": rb.error_type},
                        "fields_right_a": _score(ra), "fields_right_b": _score(rb),
                        "change": _score(rb) - _score(ra)})
    changed.sort(key=lambda c: (c["change"], c["id"]))  # biggest loss first
    return {"n_paired": len(pa), "n_only_a": len(a) - len(pa), "n_only_b": len(b) - len(pb),
            "figures": figures, "mcnemar": tests, "changed": changed}


def compare_runs(run_a: str | Path, run_b: str | Path, *, n_resamples: int = 1000) -> dict[str, Any]:
    """Two run folders → comparison (see compare_results) with both runs' configs."""
    ca, cb = load_run(run_a)["config"], load_run(run_b)["config"]
    out = compare_results(load_results(run_a), load_results(run_b), n_resamples=n_resamples)
    out["a"] = {"dir": str(run_a), "model": ca["model"], "prompt_hash": ca["prompt_hash"]}
    out["b"] = {"dir": str(run_b), "model": cb["model"], "prompt_hash": cb["prompt_hash"]}
    return out
