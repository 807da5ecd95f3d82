"""Learning from editors' decisions: fine-tune the active encoder, refit the combiner, gate, promote.

    decision_items   approved, corrected and rejected labels → gold items (+ their two opinions)
    learn            the whole step: train on decisions (+ replayed written items), refit the
                     combiner, score parent and candidate on held-out data, promote or refuse

What a decision teaches: approved → the proposal; corrected → the editor's fields; rejected →
the correction it implies: a relevant proposal rejected means "not relevant", a not-relevant
one rejected means "relevant" (only the relevance head learns from it).

Held-back decisions: a fixed quarter of each thesis's decisions (by a hash of the label id, so a
decision once held back stays held back) never trains; the gate scores the parent and the
candidate encoder on them and on the gold files given, and the candidate is promoted only if
`evaluation.gate.check` passes with the parent's figures as the baseline (the CI gate's rule:
no figure below the parent's value minus max(0.05, 2/n)). A refused version is kept and
listed, not used. Calibration (temperatures, confidence map) is the parent's.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from classifier.combine.combiner import FILE as COMBINER_FILE
from classifier.combine.combiner import Combiner, Sample
from classifier.config import ThesesFile
from classifier.encoder import SHIPPED_DIR, card, versions
from classifier.encoder.data import example_from_item, load_written
from classifier.encoder.train import CHECKPOINT, TrainSettings, train
from classifier.errors import ConfigError
from classifier.evaluation.gold import EvalItem, GoldTarget, file_sha256
from classifier.records import GoldLabel
from classifier.store.tables import labels

HOLDBACK_PERCENT = 25
SAMPLES_FILE = "combiner-samples.jsonl"
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Decided:
    """One decided label as a gold item, whether it is held back, and its stored opinions."""

    item: EvalItem
    label_id: int
    held_back: bool
    proposals: dict[str, Any] | None = None


def held_back(thesis_id: str, label_id: int) -> bool:
    """A decision's fixed place: True for the quarter of each thesis's decisions kept for the gate."""
    h = hashlib.sha256(f"{thesis_id}:{label_id}".encode()).digest()
    return int.from_bytes(h[:4], "big") % 100 < HOLDBACK_PERCENT


def _target(rec: dict[str, Any]) -> GoldTarget:
    if rec["review_state"] in ("approved", "corrected"):
        return GoldTarget.from_label(GoldLabel.model_validate(rec["label"]))
    if rec["proposed"]["relevant"]:
        return GoldTarget(relevant=False)
    return GoldTarget(relevant=True, scored=frozenset({"relevant"}))


def decision_items(engine: Engine, theses: ThesesFile, *, since: datetime | None = None
                   ) -> tuple[list[Decided], int]:
    """→ (the decided labels as items, how many were left out: thesis no longer in the file)."""
    from classifier import review_export
    with engine.connect() as c:
        recs = review_export.export(c, states=("approved", "corrected", "rejected"))
        props = dict(c.execute(select(labels.c.id, labels.c.proposals).where(
            labels.c.review_state.in_(("approved", "corrected", "rejected")))).all())
    known = {t.id: t for t in theses.thesis}
    out, unknown = [], 0
    for rec in recs:
        if since is not None and rec["decided_at"] and \
                datetime.fromisoformat(rec["decided_at"]) < since:
            continue
        thesis = known.get(rec["thesis"])
        if thesis is None:
            unknown += 1
            continue
        label_id = int(rec["id"].removeprefix("label-"))
        art = rec["article"]
        item = EvalItem(id=rec["id"], thesis=thesis, title=art["title"] or "", text=art["text"],
                        source=art["source"], url=art["url"], gold=_target(rec), origin="review")
        out.append(Decided(item, label_id, held_back(thesis.id, label_id), props.get(label_id)))
    return out, unknown


def samples_of(decided: Sequence[Decided]) -> list[Sample]:
    """Decided combined labels → combiner samples (both opinions as stored, the decision as gold)."""
    out = []
    for d in decided:
        p = d.proposals
        if not p or not p.get("encoder") or "probs" not in p["encoder"]:
            continue
        g = d.item.gold
        gold = {f: g.value(f) for f in ("relevant", "evidence_type", "direction", "strength")
                if f in g.scored}
        out.append(Sample(enc_probs=p["encoder"]["probs"], llm=p.get("llm"), gold=gold,
                          group=d.item.thesis.id))
    return out


def refit_samples(parent_dir: Path, new_dir: Path) -> list[Sample]:
    """The samples a new version's combiner starts from: the parent combiner's own fit data
    judged again by the new encoder when its sources (an LLM eval run over gold items none of
    the versions trained on) are at hand, so the weights fit the new encoder's probabilities;
    else the parent's stored samples as they are."""
    from classifier.backends.encoder import EncoderBackend
    from classifier.combine.fit import samples_from_run
    from classifier.config import load_theses
    from classifier.evaluation.gold import load_gold
    from classifier.evaluation.runner import load_results
    path = parent_dir / COMBINER_FILE
    sources = json.loads(path.read_text(encoding="utf-8")).get("card", {}).get(
        "fitted_on", {}).get("sources", []) if path.exists() else []
    runs = [s["run"] for s in sources if "run" in s]
    gold = [g for s in sources for g in s.get("gold", [])]
    theses = next((s.get("theses_file") for s in sources if s.get("theses_file")), None)
    if not runs or not gold or not theses or not all(Path(x).exists() for x in [*runs, *gold, theses]):
        return read_samples(parent_dir)
    items = load_gold(gold, load_theses(theses))
    encoder = EncoderBackend(new_dir)
    out: list[Sample] = []
    for run in runs:
        ids = {r.id for r in load_results(run)}
        out += samples_from_run([it for it in items if it.id in ids], run, encoder)
    return out


def read_samples(folder: Path) -> list[Sample]:
    """A model folder → the samples its combiner was fitted on ([] when none were kept)."""
    path = folder / SAMPLES_FILE
    if not path.exists():
        return []
    return [Sample(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def write_samples(folder: Path, samples: Sequence[Sample]) -> None:
    """Samples → <folder>/combiner-samples.jsonl (what the next refit starts from)."""
    with (folder / SAMPLES_FILE).open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.__dict__) + "\n")


@dataclass
class LearnOptions:
    """What `evidence model train --from-decisions` was given."""

    out: Path | None = None  # default: versions.models_dir() / <UTC time>
    since: datetime | None = None
    epochs: int = 2
    lr: float = 5e-5
    seed: int = 0
    replay: Sequence[str] = ()  # written gold-format files replayed beside the decisions
    replay_theses: str | None = None
    gate_gold: Sequence[str] = ()  # gold files (theses from `gate_theses`) the gate also scores
    gate_theses: ThesesFile | None = None
    max_steps: int | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def learn(engine: Engine, theses: ThesesFile, opts: LearnOptions, *,
          progress: Progress | None = None, say: Callable[[str], None] = lambda _m: None
          ) -> dict[str, Any]:
    """Decisions → a new encoder version, gated; → {version, promoted, gate, counts, folder}."""
    from classifier.encoder import gatecheck
    started = time.perf_counter()
    decided, unknown = decision_items(engine, theses, since=opts.since)
    train_part = [d for d in decided if not d.held_back]
    gate_part = [d for d in decided if d.held_back]
    if not train_part:
        raise ConfigError(f"no decisions to learn from ({len(decided)} decided, "
                          f"{len(gate_part)} held back for the gate)")
    parent_dir = Path(versions.active_folder(engine) or SHIPPED_DIR)
    parent = card.read_card(parent_dir)
    replay = _replay(opts, len(train_part), parent.get("split", {}).get("theses", {}))
    examples = [example_from_item(d.item) for d in train_part] + \
        [example_from_item(it) for it in replay]
    out = opts.out or versions.models_dir() / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    say(f"{len(train_part)} decisions to learn from, {len(replay)} written items replayed, "
        f"{len(gate_part)} held back for the gate; parent {parent['version']}")
    new = fine_tune(parent_dir, examples, out, epochs=opts.epochs, lr=opts.lr, seed=opts.seed,
                    max_steps=opts.max_steps, progress=progress, fields={
                        "data": [{"path": "decisions", "items": len(train_part),
                                  "held_back": len(gate_part),
                                  "sha256": _items_sha(d.item for d in train_part),
                                  "since": opts.since.isoformat() if opts.since else None},
                                 *([{"path": p, "items": len(replay),
                                     "sha256": file_sha256([p])}
                                    for p in opts.replay if Path(p).exists()] if replay else [])],
                        "command": opts.command})
    samples = refit_samples(parent_dir, out) + samples_of(train_part)
    combiner = Combiner.fit(samples, new["version"]) if samples else Combiner.default(new["version"])
    if combiner.fitted:
        combiner.card = {"fitted_on": {"samples": len(samples), "decisions": len(samples_of(train_part))},
                         "parent": parent["version"], "created_at": new["created_at"]}
        combiner.save(out)
        write_samples(out, samples)
    else:
        (out / COMBINER_FILE).unlink(missing_ok=True)
    gate = gatecheck.compare(parent_dir, out, [d.item for d in gate_part], opts, say)
    versions.register(engine, version=new["version"], path=out, parent=parent["version"],
                      decisions=len(train_part), gate=gate, promote=gate["passed"])
    card.update(out, metrics={"gate": gate}, time={**new["time"],
                                                  "total_s": round(time.perf_counter() - started, 1)})
    return {"version": new["version"], "folder": str(out), "promoted": gate["passed"],
            "gate": gate, "decisions": len(train_part), "held_back": len(gate_part),
            "replayed": len(replay), "unknown_thesis": unknown, "parent": parent["version"],
            "combiner": combiner.version}


def fine_tune(parent_dir: Path, examples: Sequence[Any], out: Path, *, epochs: int, lr: float,
              seed: int = 0, max_steps: int | None = None, progress: Progress | None = None,
              fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """A parent model folder + examples → a fine-tuned model folder at `out` (the parent's
    calibration, corpora and split kept in its card) → the new card."""
    parent = card.read_card(parent_dir)
    settings = TrainSettings(epochs=epochs, seed=seed, lr=lr, head_lr=lr * 10,
                             max_steps=max_steps, max_length=int(parent["settings"]["max_length"]))
    from classifier.evaluation.adapters import DATASETS
    written = {"review", *(e.origin for e in examples)} - set(DATASETS)
    model, _, log = train(examples, settings, out, written=written, progress=progress,
                          init_weights=parent_dir / parent["weights"]["file"])
    body = {k: parent.get(k) for k in ("base", "corpora", "split")}
    body.update(
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        settings=settings.model_dump(mode="json"), parent=parent["version"], data=[],
        train_log={k: v for k, v in log.items() if k != "losses"},
        losses={"every_10th": log["losses"][::10]}, calibration=parent["calibration"],
        environment=card.environment(), time={"train_s": log["train_s"]}, command="",
        metrics={})
    body.update(fields or {})
    new = card.write(out, model, body)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return new


def _items_sha(items: Any) -> str:
    """Items → SHA-256 over their ids, texts and gold (what the version learned from)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.text, it.gold.model_dump(mode="json")],
                            sort_keys=True, default=sorted).encode())
    return h.hexdigest()


def _replay(opts: LearnOptions, n: int, split: dict[str, str]) -> list[EvalItem]:
    """→ up to n written items of the parent's training theses (as many as decisions), drawn
    with the seed, so the new version does not forget them; none without a replay file."""
    import random
    files = [p for p in opts.replay if Path(p).exists()]
    if not files or not opts.replay_theses:
        return []
    written, _, _ = load_written(files, opts.replay_theses)
    pool = [it for it in written if split.get(it.thesis.id, "train") == "train"]
    return random.Random(opts.seed).sample(pool, min(n, len(pool)))
