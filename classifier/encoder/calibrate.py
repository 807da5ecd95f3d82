"""Calibration, fitted on theses the network never trained on.

1. A temperature per head (Guo et al. 2017): the T that minimises the negative log-likelihood
   of that head's held-out targets; it changes no argmax, only how sure each head says it is.
2. A confidence map: the label's confidence is the chance that the *whole* label is right
   (what `evidence eval` scores calibration against: exact match). The product of the chosen
   heads' probabilities assumes the heads are independent, which they are not, so a Platt map
   sigma(a * logit(product) + b) is fitted on the same held-out items against exact match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from classifier.encoder import HEADS
from classifier.encoder.data import IGNORE, Example
from classifier.encoder.network import head_log_probs, log_probs

MIN_ITEMS = 20  # fewer held-out items than this: keep T = 1 and the identity map


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, head: str) -> float:
    """One head's held-out logits + targets → the NLL-minimising temperature (0.05-20)."""
    from scipy.optimize import minimize_scalar
    known = targets != IGNORE
    if int(known.sum()) < MIN_ITEMS:
        return 1.0
    z, t = logits[known], targets[known]

    def nll(log_t: float) -> float:
        lp = head_log_probs(head, z, math.exp(log_t))
        return float(-lp.gather(1, t.unsqueeze(1)).mean())
    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return round(math.exp(res.x), 4)


def decide(probs: dict[str, np.ndarray]) -> tuple[dict[str, int], float]:
    """Per-head probabilities of one pair → chosen class per head and the product of their
    probabilities (relevance alone when the pair is judged not relevant)."""
    choice = {h: int(np.argmax(probs[h])) for h in HEADS}
    joint = float(probs["relevant"][choice["relevant"]])
    if choice["relevant"] == 1:
        for h in ("direction", "evidence_type", "strength"):
            joint *= float(probs[h][choice[h]])
    return choice, joint


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def confidence(joint: float, mapping: dict[str, float]) -> float:
    """Product of head probabilities + fitted map → calibrated confidence in the whole label."""
    z = mapping["a"] * float(_logit(np.array([joint]))[0]) + mapping["b"]
    return float(1 / (1 + math.exp(-z)))


def exactly_right(choice: dict[str, int], ex: Example, gold_trigger: str | None) -> bool:
    """Chosen classes + example (+ its gold trigger; the encoder proposes none) → exact match."""
    t = ex.targets
    if choice["relevant"] != t["relevant"]:
        return False
    if t["relevant"] == 0:
        return True
    return gold_trigger is None and all(choice[h] == t[h] for h in
                                        ("direction", "evidence_type", "strength"))


def fit(logits: dict[str, torch.Tensor], examples: Sequence[Example],
        gold_triggers: Sequence[str | None]) -> dict:
    """Held-out logits + their examples → {"temperatures", "confidence_map", "n_items"}."""
    targets = {h: torch.tensor([e.targets.get(h, IGNORE) for e in examples]) for h in HEADS}
    temps = {h: fit_temperature(logits[h], targets[h], h) for h in HEADS}
    mapping = {"a": 1.0, "b": 0.0}
    if len(examples) >= MIN_ITEMS:
        lp = log_probs(logits, temps)
        joints, right = [], []
        for i, ex in enumerate(examples):
            choice, joint = decide({h: lp[h][i].exp().numpy() for h in HEADS})
            joints.append(joint)
            right.append(exactly_right(choice, ex, gold_triggers[i]))
        if 0 < sum(right) < len(right):
            from sklearn.linear_model import LogisticRegression
            x = _logit(np.array(joints)).reshape(-1, 1)
            lr = LogisticRegression(C=100.0).fit(x, np.array(right, dtype=int))
            mapping = {"a": round(float(lr.coef_[0][0]), 5), "b": round(float(lr.intercept_[0]), 5)}
    return {"temperatures": temps, "confidence_map": mapping, "n_items": len(examples),
            "method": "temperature per head (NLL); Platt map of the head product to exact match"}
