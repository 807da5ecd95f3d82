"""The training loop: examples → a trained, calibrated model folder with its card.

    examples ──encode──▶ token ids ──batches (seeded, length-bucketed)──▶ AdamW, linear decay
        │                                   └── checkpoint.pt every N steps (resume: same result)
        └── calibration theses ──▶ temperatures + confidence map ──▶ model folder + card

Deterministic on CPU for a seed: the batch order comes from the seed and the epoch, dropout
from torch's generator, whose state the checkpoint keeps; deterministic algorithms are on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from classifier.encoder import CLASSES, HEADS
from classifier.encoder.data import IGNORE, Example
from classifier.encoder.inputs import Featurizer, load_tokenizer
from classifier.encoder.network import EvidenceEncoder, base_dir, log_probs
from classifier.records import Record

CHECKPOINT = "checkpoint.pt"
Progress = Callable[[int, int, float], None]  # (step, total steps, running loss)


class TrainSettings(Record):
    """Everything that determines a training run (recorded in the card)."""

    epochs: int = Field(default=4, ge=1)
    seed: int = 0
    max_length: int = Field(default=256, ge=32, le=512)
    batch_size: int = Field(default=16, ge=1)
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    corpus_weight: float = 0.5  # loss weight of an open-corpus example; written ones weigh 1
    head_weights: dict[str, float] = {"relevant": 1.0, "direction": 1.0, "evidence_type": 0.5,
                                      "strength": 0.5}
    balance: list[str] = []  # heads whose classes weigh inversely to their frequency (off: with
    # direction balanced, the first shipped run said "neutral" for 28 of 48 relevant seed items)
    checkpoint_every: int = Field(default=50, ge=1)
    max_steps: int | None = None  # stop early (tests, smoke runs)


def _targets(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    return {h: torch.tensor([e.targets.get(h, IGNORE) for e in examples]) for h in HEADS}


class TrainSet:
    """Examples as token ids, targets and loss weights, ready to batch."""

    def __init__(self, examples: Sequence[Example], featurizer: Featurizer,
                 corpus_weight: float, written: set[str]) -> None:
        enc = [featurizer.encode(e.thesis, e.title, e.text) for e in examples]
        self.ids = [e.input_ids for e in enc]
        self.types = [e.token_type_ids for e in enc]
        self.targets = _targets(examples)
        self.weights = torch.tensor([1.0 if e.origin in written else corpus_weight
                                     for e in examples])

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Example indices → a padded batch with targets and weights."""
        n = max(len(self.ids[i]) for i in idx)
        ids = torch.zeros((len(idx), n), dtype=torch.long)
        types = torch.zeros((len(idx), n), dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for row, i in enumerate(idx):
            k = len(self.ids[i])
            ids[row, :k] = torch.tensor(self.ids[i])
            types[row, :k] = torch.tensor(self.types[i])
            mask[row, :k] = 1
        sel = torch.tensor(list(idx))
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                "weights": self.weights[sel], **{f"t_{h}": self.targets[h][sel] for h in HEADS}}


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example lengths + seed + epoch → batches: shuffled, sorted by length within chunks of
    50 batches (less padding), then the batches shuffled again."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm]


def class_weights(targets: dict[str, torch.Tensor], heads: Sequence[str]) -> dict[str, torch.Tensor]:
    """Training targets + heads to balance → per-class weights n / (k * n_c) for those heads
    (macro-F1 counts neutral as much as supports; the written set has half as many neutrals)."""
    out = {}
    for h in heads:
        t = targets[h][targets[h] != IGNORE]
        k = len(CLASSES[h])
        counts = torch.bincount(t, minlength=k).clamp(min=1).float()
        out[h] = (len(t) / (k * counts)) if len(t) else torch.ones(k)
    return out


def loss_of(model: EvidenceEncoder, batch: dict[str, torch.Tensor],
            head_weights: dict[str, float],
            balance: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Batch → the weighted multi-head loss (heads with no target in an example add nothing)."""
    logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    lp = log_probs(logits)
    total = torch.zeros(())
    for h in HEADS:
        t = batch[f"t_{h}"]
        known = t != IGNORE
        if not known.any():
            continue
        nll = -lp[h][known].gather(1, t[known].unsqueeze(1)).squeeze(1)
        w = batch["weights"][known]
        if balance and h in balance:
            w = w * balance[h][t[known]]
        total = total + head_weights.get(h, 1.0) * (nll * w).sum() / w.sum().clamp(min=1e-6)
    return total


def _optimizer(model: EvidenceEncoder, s: TrainSettings) -> torch.optim.Optimizer:
    body = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("body.")]
    heads = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("body.")]
    return torch.optim.AdamW([{"params": body, "lr": s.lr}, {"params": heads, "lr": s.head_lr}],
                             weight_decay=s.weight_decay)


def _schedule(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    w = max(1, int(total * warmup))

    def factor(step: int) -> float:
        return (step + 1) / w if step < w else max(0.0, (total - step) / max(1, total - w))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(examples: Sequence[Example], settings: TrainSettings, out: Path, *,
          written: set[str], progress: Progress | None = None,
          init_weights: Path | None = None) -> tuple[EvidenceEncoder, Featurizer, dict]:
    """Training examples → a trained network (resuming from out/checkpoint.pt when it holds
    the same run), its featurizer and a log {steps, losses, train_s, resumed_at}."""
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True)
    base = base_dir()
    model = EvidenceEncoder(base)
    if init_weights is not None:
        model.load_weights(init_weights)
    featurizer = Featurizer(load_tokenizer(base), settings.max_length)
    data = TrainSet(examples, featurizer, settings.corpus_weight, written)
    lengths = [len(x) for x in data.ids]
    per_epoch = math.ceil(len(data) / settings.batch_size)
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    balance = class_weights(data.targets, settings.balance)
    opt = _optimizer(model, settings)
    sched = _schedule(opt, total, settings.warmup)
    step, losses, spent = 0, [], 0.0
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    fingerprint = [settings.model_dump(mode="json"), [e.id for e in examples]]
    resumed_at = None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["fingerprint"] == fingerprint:
            model.load_state_dict(ck["model"], strict=False)
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
            step, losses, spent = ck["step"], ck["losses"], ck["train_s"]
            resumed_at = step
    model.train()
    started = time.perf_counter()
    while step < total:
        epoch, within = divmod(step, per_epoch)
        batches = epoch_batches(lengths, settings.batch_size, settings.seed, epoch)
        for idx in batches[within:]:
            if step >= total:
                break
            loss = loss_of(model, data.batch(idx), settings.head_weights, balance)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(round(float(loss.detach()), 5))
            if progress:
                progress(step, total, float(np.mean(losses[-20:])))
            if step % settings.checkpoint_every == 0 or step == total:
                torch.save({"fingerprint": fingerprint, "model": model.trained_state(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "rng": torch.get_rng_state(), "step": step, "losses": losses,
                            "train_s": spent + time.perf_counter() - started}, ckpt_path)
    model.eval()
    log = {"steps": step, "epochs": settings.epochs, "examples": len(data),
           "steps_per_epoch": per_epoch, "losses": losses, "resumed_at": resumed_at,
           "train_s": round(spent + time.perf_counter() - started, 1)}
    return model, featurizer, log


@torch.inference_mode()
def predict_logits(model: EvidenceEncoder, featurizer: Featurizer, examples: Sequence[Example],
                   batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Examples → raw logits per head (for calibration), in example order."""
    data = TrainSet(examples, featurizer, 1.0, set())
    outs: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
    for s in range(0, len(data), batch_size):
        b = data.batch(range(s, min(s + batch_size, len(data))))
        logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        for h in HEADS:
            outs[h].append(logits[h])
    return {h: torch.cat(v) if v else torch.zeros((0, 2)) for h, v in outs.items()}
