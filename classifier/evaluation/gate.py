"""The CI gate: the seed gold scored with the embedded model must meet eval/baseline.json.

The baseline holds the gold files' SHA-256 and, per headline figure, a floor (higher is better)
or a ceiling (failure rate, ECE). The gate fails when the gold changed (its hash differs: the
floors were measured on other items) or when any figure misses its bound. `--update` writes the
bounds of a fresh run — measured value minus a margin of max(0.05, 2/n), i.e. at least two items
of slack for the embedded model's run-to-run variation — and never loosens a bound unless
`allow_regression` is given (the pattern of trafilatura's tests/eval_gate.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifier.errors import ConfigError
from classifier.evaluation.metrics import LOWER_IS_BETTER
from classifier.store.engine import utcnow

MIN_MARGIN = 0.05
ITEMS_OF_SLACK = 2


@dataclass
class GateResult:
    """What the gate decided: passed, each bound checked, and why it failed."""

    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # the baseline written by --update


def load_baseline(path: str | Path) -> dict[str, Any] | None:
    """Baseline path → its dict, None if the file does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"baseline is not valid JSON: {e.msg}", path=str(p), line=e.lineno) from e
    for key in ("gold_sha256", "floors", "ceilings"):
        if key not in data:
            raise ConfigError(f"baseline lacks {key!r}", path=str(p))
    return data


def gold_check(baseline: dict[str, Any] | None, gold_sha256: str) -> list[str]:
    """Baseline + current gold hash → problems (missing baseline, changed gold)."""
    if baseline is None:
        return ["no baseline yet: run `evidence eval gate --update` to measure one"]
    if baseline["gold_sha256"] != gold_sha256:
        return [f"the gold set changed (SHA-256 {gold_sha256[:16]}, baseline measured on "
                f"{baseline['gold_sha256'][:16]}): re-measure with `evidence eval gate --update`"]
    return []


def check(figures: dict[str, Any], baseline: dict[str, Any]) -> GateResult:
    """Run figures + baseline → GateResult over every floor and ceiling in the baseline."""
    res = GateResult(passed=True)
    for kind, bounds in (("floor", baseline["floors"]), ("ceiling", baseline["ceilings"])):
        for name, bound in bounds.items():
            value = (figures.get(name) or {}).get("value")
            ok = value is not None and (value >= bound if kind == "floor" else value <= bound)
            res.checks.append({"figure": name, kind: bound, "value": value, "ok": ok})
            if not ok:
                res.passed = False
                shown = "n/a" if value is None else f"{value:.3f}"
                res.problems.append(f"{name} = {shown} {'<' if kind == 'floor' else '>'} "
                                    f"{kind} {bound:.3f}")
    return res


def proposed_bounds(figures: dict[str, Any], *, partial: bool = False
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """Run figures → (floors, ceilings) at the measured value ∓ max(0.05, 2/n), rounded outward;
    `partial` (measured on part of the gold) widens each bound to its 95% interval, because the
    full set's value is then only known to lie in it."""
    floors, ceilings = {}, {}
    for name, f in figures.items():
        v, n = f.get("value"), f.get("n") or 0
        if v is None or not n:
            continue
        margin = max(MIN_MARGIN, ITEMS_OF_SLACK / n)
        ci = f.get("ci") or [None, None]
        if name in LOWER_IS_BETTER:
            hi = max(v + margin, ci[1]) if partial and ci[1] is not None else v + margin
            ceilings[name] = min(1.0, math.ceil(hi * 100) / 100)
        else:
            lo_v = min(v - margin, ci[0]) if partial and ci[0] is not None else v - margin
            lo = -1.0 if name.endswith("qwk") else 0.0
            floors[name] = max(lo, math.floor(lo_v * 100) / 100)
    return floors, ceilings


def update(figures: dict[str, Any], old: dict[str, Any] | None, *, gold_files: list[str],
           gold_sha256: str, run_config: dict[str, Any], run_dir: str, model_spec: str,
           allow_regression: bool = False, measured_items: int | None = None,
           gold_items: int | None = None) -> GateResult:
    """Fresh run figures (+ old baseline) → GateResult whose .baseline is the new baseline, or
    a failure naming the bounds that would be loosened (nothing to write then). A run that
    labeled fewer items than the gold holds (measured_items < gold_items) gives wider bounds."""
    partial = measured_items is not None and gold_items is not None and measured_items < gold_items
    floors, ceilings = proposed_bounds(figures, partial=partial)
    res = GateResult(passed=True)
    if old is not None and not allow_regression:
        for name, bound in old["floors"].items():
            if name in floors and floors[name] < bound:
                value = figures[name]["value"]
                if value < bound:
                    res.problems.append(f"{name} = {value:.3f} is below its floor {bound:.3f}; "
                                        f"lowering a floor needs --allow-regression")
                floors[name] = bound  # keep the stricter bound
            elif name not in floors:
                floors[name] = bound
        for name, bound in old["ceilings"].items():
            if name in ceilings and ceilings[name] > bound:
                value = figures[name]["value"]
                if value > bound:
                    res.problems.append(f"{name} = {value:.3f} is above its ceiling {bound:.3f}; "
                                        f"raising a ceiling needs --allow-regression")
                ceilings[name] = bound
            elif name not in ceilings:
                ceilings[name] = bound
    if res.problems:
        res.passed = False
        return res
    res.baseline = {
        "gold": gold_files, "gold_sha256": gold_sha256, "model": model_spec,
        "measured_with": {"model": run_config["model"], "prompt_hash": run_config["prompt_hash"],
                          "run": run_dir},
        "updated_at": utcnow().isoformat(),
        "measured_items": measured_items, "gold_items": gold_items, "partial": partial,
        "rule": f"floor = value - max({MIN_MARGIN}, {ITEMS_OF_SLACK}/n), ceiling = value + the same, "
                f"rounded outward to 0.01" + (" and widened to the 95% interval, because only "
                f"{measured_items} of {gold_items} gold items were labeled" if partial else "")
                + "; never loosened without --allow-regression",
        "measured": {k: {"value": v["value"], "ci": v.get("ci"), "n": v.get("n")}
                     for k, v in figures.items()},
        "floors": dict(sorted(floors.items())), "ceilings": dict(sorted(ceilings.items())),
    }
    return res


def write_baseline(path: str | Path, baseline: dict[str, Any]) -> None:
    """Baseline dict → pretty JSON file."""
    Path(path).write_text(json.dumps(baseline, indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")
