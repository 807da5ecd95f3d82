"""The promotion gate of `evidence model train --from-decisions`: parent vs candidate encoder on
data neither trained on, judged by the CI gate's rule (`evaluation.gate`).

Each set (the held-back decisions; each gold file given) is labeled by both encoders alone (the
LLM is not asked: its answers do not change between versions), into <candidate>/gate/<set>/
{parent,candidate}. The parent's figures become the baseline (value minus max(0.05, 2/n), the
CI gate's margin) and the candidate must meet every bound on every set. No set with items: the
candidate is refused (nothing shows it does not regress).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from classifier.evaluation.gold import EvalItem, load_gold

GATED = ("relevant.accuracy", "relevant.macro_f1", "direction.accuracy", "direction.macro_f1",
         "evidence_type.accuracy", "strength.accuracy", "exact_match", "ece")


def _figures(folder: Path, items: Sequence[EvalItem], run_dir: Path) -> dict[str, Any]:
    from classifier.backends.encoder import EncoderBackend
    from classifier.evaluation.runner import run_eval
    record = run_eval(items, EncoderBackend(folder), run_dir, gold={"gate": str(run_dir)},
                      n_resamples=200)
    return {k: v for k, v in record["metrics"]["figures"].items() if k in GATED}


def compare(parent: Path, candidate: Path, held_back: Sequence[EvalItem], opts: Any,
            say: Callable[[str], None]) -> dict[str, Any]:
    """→ {"passed", "sets": {name: {"n", "parent", "candidate", "problems"}}}."""
    from classifier.evaluation import gate
    sets: dict[str, list[EvalItem]] = {}
    if held_back:
        sets["held-back-decisions"] = list(held_back)
    for path in opts.gate_gold:
        if opts.gate_theses is None:
            break
        sets[Path(path).stem] = load_gold([path], opts.gate_theses)
    out: dict[str, Any] = {"passed": bool(sets), "sets": {}}
    if not sets:
        out["problems"] = ["nothing to gate on: no held-back decisions and no --gate-gold"]
    for name, items in sets.items():
        base = _figures(parent, items, candidate / "gate" / name / "parent")
        cand = _figures(Path(candidate), items, candidate / "gate" / name / "candidate")
        floors, ceilings = gate.proposed_bounds(base)
        res = gate.check(cand, {"floors": floors, "ceilings": ceilings})
        out["sets"][name] = {"n": len(items), "parent": _values(base), "candidate": _values(cand),
                             "problems": res.problems}
        out["passed"] = out["passed"] and res.passed
        say(f"gate {name} ({len(items)} items): " + ("ok" if res.passed else
                                                     "; ".join(res.problems)))
    return out


def _values(figures: dict[str, Any]) -> dict[str, float | None]:
    return {k: f.get("value") for k, f in figures.items()}
