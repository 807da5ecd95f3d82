"""Fitting the combiner from gold items an LLM run labeled, and scoring it leave-one-thesis-out.

    samples_from_run   gold items + an `evidence eval run` folder of the LLM → Samples (the
                       encoder judges each item here; an item the LLM failed has llm = None)
    cross_validate     leave-one-thesis-out accuracy per field: combiner vs encoder vs LLM
    fit_and_save       Samples → combiner.json (+ its samples and card) in the encoder's folder

The items must be ones the encoder never trained on (its card's split names their theses
'calibration' or 'heldout', or they are not in its training data at all); `refuse_trained`
checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.combine.combiner import CLASSES, FIELDS, Combiner, Sample
from classifier.errors import ConfigError
from classifier.evaluation.gold import EvalItem


def llm_opinion(pred: dict[str, Any] | None, model: str) -> dict[str, Any] | None:
    """An eval run's `pred` → the LLM's proposal as the combiner reads it (None: it failed)."""
    if pred is None:
        return None
    return {"model": model, **{f: pred.get(f) for f in FIELDS}, "trigger": pred.get("trigger"),
            "confidence": pred.get("confidence", 0.0)}


def gold_of(item: EvalItem) -> dict[str, Any]:
    """An item's gold → the judged class fields (unjudged ones left out)."""
    return {f: item.gold.value(f) for f in FIELDS if f in item.gold.scored}


def refuse_trained(items: Sequence[EvalItem], encoder_card: dict[str, Any]) -> None:
    """ConfigError when an item's thesis is one the encoder trained on."""
    split = encoder_card.get("split", {}).get("theses", {})
    trained = sorted({it.thesis.id for it in items if split.get(it.thesis.id) == "train"})
    if trained:
        raise ConfigError(f"the encoder trained on theses {trained[:5]}: fit the combiner on "
                          f"items it never saw (its calibration or held-out theses, or new gold)")


def samples_from_run(items: Sequence[EvalItem], run_dir: str | Path, encoder: Any
                     ) -> list[Sample]:
    """Items + LLM run folder + EncoderBackend → one Sample per item the run has a result for."""
    from classifier.evaluation.runner import load_results, load_run
    model = load_run(run_dir)["config"]["model"]
    results = {r.id: r for r in load_results(run_dir)}
    out = []
    for it in items:
        r = results.get(it.id)
        if r is None:
            continue
        probs = encoder.judge(it.thesis, it.title, it.text)["probs"]
        out.append(Sample(enc_probs=probs, llm=llm_opinion(r.pred, model), gold=gold_of(it),
                          group=it.thesis.id))
    return out


def _choice(comb: Combiner, s: Sample) -> dict[str, Any]:
    choice, _, _ = comb.decide(s.enc_probs, s.llm, 0.5)
    return choice


def _llm_choice(s: Sample) -> dict[str, Any]:
    if s.llm is None:
        return dict.fromkeys(FIELDS)
    return {f: s.llm.get(f) for f in FIELDS}


def _acc(preds: list[dict[str, Any]], samples: Sequence[Sample], name: str) -> float | None:
    pairs = [(p.get(name), s.gold.get(name)) for p, s in zip(preds, samples, strict=True)
             if s.gold.get(name) is not None and (name == "relevant" or s.gold.get("relevant"))]
    return round(float(np.mean([a == b for a, b in pairs])), 3) if pairs else None


def _macro_f1(preds: list[dict[str, Any]], samples: Sequence[Sample]) -> float | None:
    pairs = [(p.get("direction"), s.gold.get("direction"))
             for p, s in zip(preds, samples, strict=True)
             if s.gold.get("relevant") and s.gold.get("direction") is not None]
    if not pairs:
        return None
    f1s = []
    for c in CLASSES["direction"]:
        tp = sum(a == c and b == c for a, b in pairs)
        fp = sum(a == c and b != c for a, b in pairs)
        fn = sum(a != c and b == c for a, b in pairs)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return round(float(np.mean(f1s)), 3)


def cross_validate(samples: Sequence[Sample], encoder_version: str) -> dict[str, Any]:
    """Samples → leave-one-thesis-out figures for the combiner, the encoder alone, the LLM alone."""
    groups = sorted({s.group for s in samples})
    comb_preds: list[dict[str, Any]] = [{} for _ in samples]
    for g in groups:
        fit = Combiner.fit([s for s in samples if s.group != g], encoder_version)
        for i, s in enumerate(samples):
            if s.group == g:
                comb_preds[i] = _choice(fit, s)
    enc = Combiner.default(encoder_version)
    enc_preds = [_choice(enc, s) for s in samples]
    llm_preds = [_llm_choice(s) for s in samples]
    out: dict[str, Any] = {"folds": len(groups), "n": len(samples)}
    for side, preds in (("combined", comb_preds), ("encoder", enc_preds), ("llm", llm_preds)):
        out[side] = {f"{f}.accuracy": _acc(preds, samples, f) for f in FIELDS}
        out[side]["direction.macro_f1"] = _macro_f1(preds, samples)
    return out


def fit_and_save(samples: Sequence[Sample], folder: Path, encoder_version: str, *,
                 sources: list[dict[str, Any]], command: str) -> Combiner:
    """Samples → the fitted combiner, written with its card and samples into the model folder."""
    from classifier.encoder.learn import write_samples
    if len(samples) < 20:
        raise ConfigError(f"{len(samples)} samples are too few to fit a combiner (at least 20)")
    comb = Combiner.fit(samples, encoder_version)
    comb.card = {"fitted_on": {"samples": len(samples), "sources": sources,
                               "theses": sorted({s.group for s in samples})},
                 "cross_validation": cross_validate(samples, encoder_version),
                 "command": command}
    comb.save(folder)
    write_samples(folder, samples)
    return comb
