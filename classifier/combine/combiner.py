"""The combiner: logistic stacking per field over the encoder's calibrated heads and the LLM.

For each class field (relevant, evidence_type, direction, strength) a multinomial logistic
regression reads
    the encoder's log-probabilities for that field's classes,
    the LLM's answer as one-hot (zeros when the LLM did not answer or said not relevant),
    the same one-hot times the LLM's stated confidence, and whether the LLM answered,
and a last one maps (log of the chosen classes' joint probability, how many fields the two sides
agree on, whether the LLM answered) to the chance the whole label is right (the harness's exact
match), so the combined confidence means what it says. L2-regularised, fitted with L-BFGS on
gold items and editors' decisions whose both opinions are known.

A fitted combiner is one JSON file beside its encoder (`combiner.json` in the model folder) with
its card: the encoder version it was fitted for, the data (files and SHA-256), the weights, the
cross-validated figures. `Combiner.default()` (no file) lets the encoder decide every class field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.errors import ConfigError

FILE = "combiner.json"
FORMAT = 1
L2 = 1.0  # λ of Σ NLL + λ/2·‖W‖² over the non-bias weights (sklearn's C = 1), fixed before any fit
CLASSES: dict[str, tuple[Any, ...]] = {
    "relevant": (False, True),
    "evidence_type": ("direct", "circumstantial"),
    "direction": ("supports", "undermines", "neutral"),
    "strength": ("weak", "moderate", "strong"),
}
FIELDS = tuple(CLASSES)
# the encoder's heads name relevance classes "no"/"yes"; the probabilities are in that order
MIN_PER_FIELD = 12  # fewer training rows than this for a field: that field stays the encoder's


@dataclass(frozen=True)
class Sample:
    """One pair whose right answer is known (gold or an editor's decision), with both opinions.

    enc_probs: the encoder's calibrated probabilities per head; llm: the LLM's proposal
    (provenance.opinion shape) or None; gold: the judged fields known right, a field missing or
    None when not judged (a not-relevant item judges only `relevant`)."""

    enc_probs: dict[str, list[float]]
    llm: dict[str, Any] | None
    gold: dict[str, Any]
    group: str = ""  # thesis id: cross-validation holds whole theses out


def features(name: str, enc_probs: dict[str, list[float]], llm: dict[str, Any] | None
             ) -> np.ndarray:
    """One field + both opinions → its feature vector (see the module doc)."""
    classes = CLASSES[name]
    p = np.clip(np.asarray(enc_probs[name], dtype=float), 1e-4, 1.0)
    onehot = np.zeros(len(classes))
    answered = 0.0
    conf = 0.0
    if llm is not None:
        answered = 1.0
        conf = float(llm.get("confidence") or 0.0)
        value = llm.get(name)
        if name == "relevant" or llm.get("relevant"):
            if value in classes:
                onehot[classes.index(value)] = 1.0
    return np.concatenate([np.log(p), onehot, onehot * conf, [answered]])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float = L2) -> np.ndarray:
    """Features (n, d) + class indices (n,) → weights (k, d + 1), the last column the bias."""
    from scipy.optimize import minimize
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.eye(k)[y]

    def loss(w_flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = w_flat.reshape(k, d + 1)
        p = _softmax(xb @ w.T)
        nll = -np.sum(onehot * np.log(np.clip(p, 1e-12, 1)))
        reg = 0.5 * l2 * np.sum(w[:, :-1] ** 2)
        grad = (p - onehot).T @ xb
        grad[:, :-1] += l2 * w[:, :-1]
        return (nll + reg) / n, grad.ravel() / n
    res = minimize(loss, np.zeros(k * (d + 1)), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500})
    return res.x.reshape(k, d + 1)


def _agreement(choice: dict[str, Any], llm: dict[str, Any] | None) -> float:
    if llm is None:
        return 0.0
    if llm.get("relevant") != choice["relevant"]:
        return 0.0
    if not choice["relevant"]:
        return 1.0
    same = sum(llm.get(f) == choice[f] for f in FIELDS[1:])
    return (1 + same) / len(FIELDS)


@dataclass
class Combiner:
    """Per-field weights (empty: the encoder decides that field) + the confidence map."""

    encoder_version: str
    weights: dict[str, list[list[float]]] = field(default_factory=dict)
    # (a, b, c, d): sigma(a * log joint + b * agreement + c * answered + d)
    confidence_map: list[float] | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def default(cls, encoder_version: str) -> Combiner:
        """No fitted file: the encoder decides the class fields, its confidence is the label's."""
        return cls(encoder_version=encoder_version)

    @property
    def fitted(self) -> bool:
        return bool(self.weights)

    @property
    def version(self) -> str | None:
        """A fitted combiner's id: 'c-' + the first 10 hex digits of its weights' SHA-256."""
        if not self.fitted:
            return None
        raw = json.dumps([self.encoder_version, self.weights, self.confidence_map], sort_keys=True)
        return "c-" + hashlib.sha256(raw.encode()).hexdigest()[:10]

    def probs(self, name: str, enc_probs: dict[str, list[float]], llm: dict[str, Any] | None
              ) -> np.ndarray:
        """Field + both opinions → the combined class probabilities (the encoder's if unfitted)."""
        if name not in self.weights:
            return np.asarray(enc_probs[name], dtype=float)
        w = np.asarray(self.weights[name])
        x = np.append(features(name, enc_probs, llm), 1.0)
        return _softmax(w @ x)

    def choose(self, enc_probs: dict[str, list[float]], llm: dict[str, Any] | None
               ) -> tuple[dict[str, Any], float]:
        """Both opinions → (judged class fields, the joint probability of the chosen classes)."""
        choice: dict[str, Any] = {}
        joint = 1.0
        for name in FIELDS:
            p = self.probs(name, enc_probs, llm)
            k = int(np.argmax(p))
            choice[name] = CLASSES[name][k]
            joint *= float(p[k])
            if not choice["relevant"]:
                choice.update(evidence_type=None, direction=None, strength=None)
                break
        return choice, joint

    def decide(self, enc_probs: dict[str, list[float]], llm: dict[str, Any] | None,
               enc_confidence: float) -> tuple[dict[str, Any], float, dict[str, str]]:
        """Both opinions → (judged class fields, confidence, which side decided each field)."""
        choice, joint = self.choose(enc_probs, llm)
        fields = FIELDS if choice["relevant"] else FIELDS[:1]
        decided = {f: "combiner" if f in self.weights else "encoder" for f in fields}
        if self.confidence_map is None:
            conf = enc_confidence
            decided["confidence"] = "encoder"
        else:
            a, b, c, d = self.confidence_map
            z = (a * math.log(max(joint, 1e-9)) + b * _agreement(choice, llm)
                 + c * (llm is not None) + d)
            conf = 1 / (1 + math.exp(-z))
            decided["confidence"] = "combiner"
        return choice, round(float(conf), 4), decided

    # -- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(cls, samples: Sequence[Sample], encoder_version: str, *, l2: float = L2) -> Combiner:
        """Samples → a fitted combiner (a field with fewer than MIN_PER_FIELD rows stays the
        encoder's; the confidence map is fitted on the combined choices' exact match)."""
        out = cls(encoder_version=encoder_version)
        for name in FIELDS:
            rows = [s for s in samples if _target(s, name) is not None]
            if len(rows) < MIN_PER_FIELD:
                continue
            x = np.stack([features(name, s.enc_probs, s.llm) for s in rows])
            y = np.array([CLASSES[name].index(_target(s, name)) for s in rows])
            out.weights[name] = fit_softmax(x, y, len(CLASSES[name]), l2).round(5).tolist()
        if len(samples) >= MIN_PER_FIELD and out.weights:
            out.confidence_map = _fit_confidence(out, samples)
        return out

    # -- files ------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """→ <folder>/combiner.json (weights + card)."""
        path = Path(folder) / FILE
        body = {"format": FORMAT, "version": self.version, "encoder_version": self.encoder_version,
                "fields": list(self.weights), "weights": self.weights,
                "confidence_map": self.confidence_map, "card": self.card}
        path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path, encoder_version: str) -> Combiner:
        """Model folder + its encoder's version → its combiner, or the default when it has none;
        ConfigError when the file is unreadable or was fitted for another encoder version."""
        path = Path(folder) / FILE
        if not path.exists():
            return cls.default(encoder_version)
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the combiner: {e}", path=str(path)) from e
        if body.get("format") != FORMAT:
            raise ConfigError(f"combiner format {body.get('format')!r}, this version reads "
                              f"{FORMAT}", path=str(path))
        if body.get("encoder_version") != encoder_version:
            raise ConfigError(
                f"this combiner was fitted for encoder {body.get('encoder_version')!r}, but the "
                f"encoder in {folder} is {encoder_version!r}; refit it (`evidence model combine`) "
                f"or delete {FILE} to let the encoder decide", path=str(path))
        out = cls(encoder_version=encoder_version, weights=body.get("weights") or {},
                  confidence_map=body.get("confidence_map"), card=body.get("card") or {})
        if body.get("version") != out.version:
            raise ConfigError(f"combiner version {body.get('version')!r} does not match its "
                              f"weights ({out.version}); the file was edited", path=str(path))
        return out


def _target(s: Sample, name: str) -> Any:
    if name == "relevant":
        return s.gold.get("relevant")
    if not s.gold.get("relevant"):
        return None
    v = s.gold.get(name)
    return v if v in CLASSES[name] else None


def exactly_right(choice: dict[str, Any], gold: dict[str, Any]) -> bool:
    """Combined choice + known answer → True when every judged class field matches."""
    if choice["relevant"] != gold.get("relevant"):
        return False
    return all(gold.get(f) is None or gold.get(f) == choice[f] for f in FIELDS[1:]) \
        if choice["relevant"] else True


def _fit_confidence(comb: Combiner, samples: Sequence[Sample]) -> list[float]:
    from scipy.optimize import minimize
    xs, ys = [], []
    for s in samples:
        choice, joint = comb.choose(s.enc_probs, s.llm)
        xs.append([math.log(max(joint, 1e-9)), _agreement(choice, s.llm), float(s.llm is not None)])
        ys.append(float(exactly_right(choice, s.gold)))
    x, y = np.asarray(xs), np.asarray(ys)

    def nll(w: np.ndarray) -> float:
        z = x @ w[:3] + w[3]
        p = np.clip(1 / (1 + np.exp(-z)), 1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)) + 1e-3 * np.sum(w[:3] ** 2))
    res = minimize(nll, np.array([1.0, 0.0, 0.0, 0.0]), method="L-BFGS-B")
    return [round(float(v), 5) for v in res.x]
