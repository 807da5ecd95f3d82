"""From training files to a finished model folder: split, train, calibrate, write, evaluate.

    written items ──thesis split──▶ train | calibration | held-out theses
    corpora (train split) ─────────▶ train
    train ──train.train──▶ network ──calibration theses──▶ temperatures + map ──▶ folder + card
    held-out theses, held-out corpus bodies, --eval gold ──evaluation.run_eval──▶ card metrics

Evaluation sets are checked against the training set: a shared thesis or article text is an
error, so no figure in a card can come from data the model saw.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classifier.encoder import calibrate, card
from classifier.encoder.data import Example, Source, corpus_items, counter_examples, \
    example_from_item, load_counters, load_written, thesis_split
from classifier.encoder.train import CHECKPOINT, Progress, TrainSettings, predict_logits, train
from classifier.errors import ConfigError
from classifier.evaluation import adapters
from classifier.evaluation.gold import EvalItem, file_sha256


@dataclass
class BuildOptions:
    """What `evidence model train` was asked for."""

    data: list[str]
    data_theses: str
    out: Path
    settings: TrainSettings
    corpora: list[str] = field(default_factory=list)
    corpora_dir: str | None = None
    corpus_scale: float = 1.0
    n_calibration: int = 6
    n_heldout: int = 8
    counters: str | None = None  # counter-theses file: training items also judged against them
    eval_sets: dict[str, tuple[str, list[EvalItem]]] = field(default_factory=dict)  # name → (what, items)
    command: str = ""


def _text_key(item: EvalItem | Example) -> str:
    return hashlib.sha256(" ".join(item.text.split()).encode()).hexdigest()


def check_disjoint(train_examples: Sequence[Example], name: str, items: Sequence[EvalItem]) -> None:
    """Training examples + an evaluation set → ConfigError if they share an article text, or a
    thesis of the written kind (corpus claims may recur: FNC-1 is split by body, as the issue and
    the competition define it)."""
    theses = {e.thesis.id for e in train_examples if e.origin not in adapters.DATASETS}
    texts = {_text_key(e) for e in train_examples}
    shared_t = sorted({it.thesis.id for it in items if it.origin not in adapters.DATASETS} & theses)
    shared_x = [it.id for it in items if _text_key(it) in texts]
    if shared_t or shared_x:
        raise ConfigError(f"evaluation set {name!r} overlaps the training data: theses "
                          f"{shared_t[:5]}, items {shared_x[:5]}")


def build(opts: BuildOptions, *, progress: Progress | None = None,
          say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Build options → a model folder at opts.out; → its card."""
    started = time.perf_counter()
    written, _, sources = load_written(opts.data, opts.data_theses)
    split = thesis_split([it.thesis.id for it in written], n_calibration=opts.n_calibration,
                         n_heldout=opts.n_heldout, seed=opts.settings.seed)
    part = {k: [it for it in written if split[it.thesis.id] == k]
            for k in ("train", "calibration", "heldout")}
    corpus = corpus_items(opts.corpora, corpora=opts.corpora_dir, seed=opts.settings.seed,
                          scale=opts.corpus_scale)
    examples = [example_from_item(it) for it in part["train"] + corpus]
    if opts.counters:
        counters = load_counters(opts.counters)
        examples += counter_examples(part["train"], counters)
        sources.append(Source(str(opts.counters), file_sha256([opts.counters]), len(counters)))
    origins = {it.origin for it in written}
    for name, (_, items) in opts.eval_sets.items():
        check_disjoint(examples, name, items)
    say(f"{len(examples)} training examples ({len(part['train'])} written over "
        f"{sum(1 for v in split.values() if v == 'train')} theses, {len(corpus)} from corpora, "
        f"{len(examples) - len(part['train']) - len(corpus)} against counter-theses); "
        f"{len(part['calibration'])} calibration, {len(part['heldout'])} held-out items")
    model, featurizer, log = train(examples, opts.settings, opts.out, written=origins,
                                   progress=progress)
    cal_started = time.perf_counter()
    cal_examples = [example_from_item(it) for it in part["calibration"]]
    logits = predict_logits(model, featurizer, cal_examples)
    calibration = calibrate.fit(logits, cal_examples, [it.gold.trigger for it in part["calibration"]])
    cal_s = time.perf_counter() - cal_started
    counts = Counter(split.values())
    fields = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": card.base_info(), "settings": opts.settings.model_dump(mode="json"),
        "data": [s.__dict__ for s in sources],
        "corpora": dict(Counter(it.origin for it in corpus)),
        "split": {"seed": opts.settings.seed, "counts": dict(counts), "theses": split},
        "train_log": {k: v for k, v in log.items() if k != "losses"},
        "losses": {"first_20_mean": _mean(log["losses"][:20]),
                   "last_20_mean": _mean(log["losses"][-20:]), "every_10th": log["losses"][::10]},
        "calibration": calibration, "environment": card.environment(),
        "time": {"train_s": log["train_s"], "calibrate_s": round(cal_s, 1)},
        "command": opts.command, "metrics": {},
    }
    written_card = card.write(opts.out, model, fields)
    say(f"model {written_card['version']} written to {opts.out}")
    metrics = evaluate(opts, part, say)
    (opts.out / CHECKPOINT).unlink(missing_ok=True)  # 120 MB, only needed to resume training
    return card.update(opts.out, metrics=metrics, time={
        **fields["time"], "evaluate_s": round(time.perf_counter() - started - log["train_s"]
                                              - cal_s, 1),
        "total_s": round(time.perf_counter() - started, 1)})


def evaluate(opts: BuildOptions, part: dict[str, list[EvalItem]], say: Callable[[str], None]
             ) -> dict[str, Any]:
    """The new model folder on every evaluation set → {name: {what, figures, run}}."""
    from classifier.backends.encoder import EncoderBackend
    from classifier.evaluation.runner import run_eval
    backend = EncoderBackend(opts.out)
    sets = dict(opts.eval_sets)
    if part["heldout"]:
        sets["heldout-theses"] = ("eval/train items of theses never trained on or calibrated on",
                                  part["heldout"])
    if part["calibration"]:
        sets["calibration-theses"] = ("eval/train items of the calibration theses (never trained "
                                      "on; the confidence map was fitted here, so ECE is optimistic)",
                                      part["calibration"])
    out: dict[str, Any] = {}
    for name, (what, items) in sets.items():
        run_dir = opts.out / "eval" / name
        record = run_eval(items, backend, run_dir, gold={"set": name, "what": what},
                          n_resamples=1000)
        out[name] = {"what": what, "run": str(run_dir), "figures": record["metrics"]["figures"]}
        f = record["metrics"]["figures"]
        say(f"{name}: relevance {f.get('relevant.accuracy', {}).get('value')}, direction "
            f"macro-F1 {f.get('direction.macro_f1', {}).get('value')}, ECE {f.get('ece', {}).get('value')}")
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


__all__ = ["BuildOptions", "Source", "build", "check_disjoint"]
