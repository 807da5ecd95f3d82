"""External labeled sets as EvalItems, read from ../shared/corpora at eval time (never copied).

Each adapter states its mapping in its module docstring and in `MAPPING` (printed in reports).
Each claim becomes a throwaway thesis whose statement is the claim; only the fields the dataset
can speak to are scored (see `GoldTarget.scored`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from classifier.config import ThesisConfig
from classifier.errors import ConfigError
from classifier.evaluation.gold import EvalItem

DEFAULT_CORPORA = Path(__file__).resolve().parents[3].parent / "shared" / "corpora"


def corpora_dir(path: str | Path | None = None) -> Path:
    """Explicit path, else $EVIDENCE_CORPORA, else ../shared/corpora beside the checkout."""
    p = Path(path or os.environ.get("EVIDENCE_CORPORA") or DEFAULT_CORPORA)
    if not p.is_dir():
        raise ConfigError("corpora folder not found (set --corpora or EVIDENCE_CORPORA)", path=str(p))
    return p


@functools.lru_cache(maxsize=65536)  # many rows share a claim: one validated thesis each
def claim_thesis(prefix: str, claim: str, *, scope: str) -> ThesisConfig:
    """A dataset's claim → a thesis whose statement is the claim (stable id from its text)."""
    digest = hashlib.sha256(claim.encode()).hexdigest()[:12]
    title = claim if len(claim) <= 120 else claim[:117] + "..."
    return ThesisConfig(id=f"{prefix}-{digest}", title=title or "(empty claim)",
                        statement=claim or "(empty claim)", probability=0.5, scope=scope, route=False)


def stratified_sample(items: Sequence[EvalItem], n: int | None, seed: int) -> list[EvalItem]:
    """Items → n of them drawn with proportional allocation per `stratum` (largest remainder,
    at least one per stratum when n allows), in a seed-determined order; None → all items."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ConfigError(f"--sample must be positive, got {n}")
    groups: dict[str, list[EvalItem]] = defaultdict(list)
    for it in items:
        groups[it.stratum or ""].append(it)
    keys = sorted(groups)
    sizes = np.array([len(groups[k]) for k in keys], dtype=float)
    quota = sizes / sizes.sum() * n
    alloc = np.floor(quota).astype(int)
    if n >= len(keys):
        alloc = np.maximum(alloc, 1)
    while alloc.sum() > n:  # the at-least-one rule overshot: take back where it is most over quota
        over = np.where(alloc > 1, alloc - quota, -np.inf)
        alloc[int(np.argmax(over))] -= 1
    order = np.argsort(-(quota - alloc), kind="stable")
    i = 0
    while alloc.sum() < n:
        k = order[i % len(keys)]
        if alloc[k] < sizes[k]:
            alloc[k] += 1
        i += 1
    rng = np.random.default_rng(seed)
    chosen: list[EvalItem] = []
    for k, m in zip(keys, alloc, strict=True):
        idx = rng.choice(len(groups[k]), size=int(m), replace=False)
        chosen.extend(groups[k][j] for j in sorted(idx))
    perm = rng.permutation(len(chosen))
    return [chosen[j] for j in perm]


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """JSON Lines dataset file → (line number, object) per non-blank line; ConfigError naming
    the file (and line) when it cannot be read or a line is not JSON."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read dataset file: {e.strerror}", path=str(path)) from e
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not valid JSON: {e.msg}", path=str(path), line=n) from e


Loader = Callable[[Path], list[EvalItem]]


def _registry() -> dict[str, tuple[Loader, str]]:
    from classifier.evaluation.adapters import climate_fever, covid_fact, fnc, perspectrum
    return {
        "fnc1": (fnc.load_fnc1, fnc.MAPPING),
        "arc": (fnc.load_arc, fnc.MAPPING),
        "climate-fever": (climate_fever.load, climate_fever.MAPPING),
        "perspectrum": (perspectrum.load, perspectrum.MAPPING),
        "covid-fact": (covid_fact.load, covid_fact.MAPPING),
    }


DATASETS = ("fnc1", "arc", "climate-fever", "perspectrum", "covid-fact")
SPLITS = ("all", "train", "heldout")
HELDOUT_SHARE = 5  # one group in five is held out of encoder training


def group_key(item: EvalItem) -> str:
    """Item → what a train/held-out split must keep together: the body for FNC-format sets
    (split by Body ID: one body carries many headlines), the claim for the others."""
    return item.text if item.origin in ("fnc1", "arc") else item.thesis.statement


def is_heldout(item: EvalItem) -> bool:
    """Item → True when its group is in the fixed held-out fifth (never trained on)."""
    digest = hashlib.sha256(b"heldout:" + group_key(item).encode()).digest()
    return digest[0] % HELDOUT_SHARE == 0


def mapping(name: str) -> str:
    """Dataset name → its label mapping, in words."""
    return _registry()[name][1]


def load_dataset(name: str, *, sample: int | None = None, seed: int = 0,
                 corpora: str | Path | None = None, split: str = "all") -> list[EvalItem]:
    """Dataset name (+ --sample N --seed S, + split all/train/heldout) → EvalItems read from
    the corpora folder; `heldout` is the fifth of bodies (FNC-format) or claims never trained on."""
    reg = _registry()
    if name not in reg:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    items = list(_load_all(name, corpora_dir(corpora)))
    if split != "all":
        items = [it for it in items if is_heldout(it) == (split == "heldout")]
    return stratified_sample(items, sample, seed)


@functools.lru_cache(maxsize=4)
def _load_all(name: str, folder: Path) -> tuple[EvalItem, ...]:
    return tuple(_registry()[name][0](folder))
