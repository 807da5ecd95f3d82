"""PERSPECTRUM (train + dev claims): claim = thesis statement, one perspective sentence = article.

Mapping: stance_label_3 SUPPORT → relevant, supports; UNDERMINE → relevant, undermines.
Each perspective cluster contributes its first perspective (pid). `stratum` keeps stance_label_5
(SUPPORT, MILDLY_SUPPORT, ...) so samples keep the mild/full mix, but mildness is not scored as
strength: it measures annotators' agreement on the stance, not how far a forecaster should move.
Scored fields: relevant, direction. Text is argument, not news; the evidence paragraphs are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from classifier.errors import ConfigError
from classifier.evaluation.adapters import claim_thesis
from classifier.evaluation.gold import EvalItem, GoldTarget

MAPPING = ("claim = thesis statement, perspective sentence = article; SUPPORT → supports; "
           "UNDERMINE → undermines (both relevant); scored: relevant, direction")
LABELS = {"SUPPORT": "supports", "UNDERMINE": "undermines"}
SCOPE = "Whether the argument supports or undermines this claim."
FILES = ("perspectrum_with_answers_v1.0.train.json", "perspectrum_with_answers_v1.0.dev.json")


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read dataset file: {e.strerror}", path=str(path)) from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", path=str(path), line=e.lineno) from e


def load(corpora: Path) -> list[EvalItem]:
    """Corpora folder → one EvalItem per claim–perspective cluster."""
    d = corpora / "perspectrum"
    pool = {p["pId"]: p["text"] for p in _json(d / "perspective_pool_v1.0.json")}  # type: ignore[union-attr]
    items = []
    for name in FILES:
        for claim in _json(d / name):  # type: ignore[union-attr]
            thesis = claim_thesis("persp", claim["text"].strip(), scope=SCOPE)
            for cluster in claim["perspectives"]:
                label = cluster["stance_label_3"]
                pid = cluster["pids"][0]
                if label not in LABELS or pid not in pool:
                    continue
                items.append(EvalItem(
                    id=f"persp-{claim['cId']}-{pid}", thesis=thesis, title="",
                    text=pool[pid].strip(), source=claim.get("source"),
                    gold=GoldTarget(relevant=True, direction=LABELS[label],
                                    scored=frozenset({"relevant", "direction"})),
                    origin="perspectrum", stratum=cluster.get("stance_label_5") or label))
    return items
