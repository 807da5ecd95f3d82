"""Training examples: gold-format files (eval/train/, editors' decisions) and the open corpora.

Every source becomes `Example`s: a thesis, an article and a target class per head, or
IGNORE where the source does not judge that head (FNC-1 has no evidence type or strength; a
not-relevant item has no direction). Splits never share a thesis (written data) or a body or
claim (corpora, `adapters.is_heldout`), so every figure is measured on what training never saw.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifier.config import ThesesFile, ThesisConfig, load_theses
from classifier.encoder import CLASSES, HEADS
from classifier.errors import ConfigError
from classifier.evaluation import adapters
from classifier.evaluation.gold import EvalItem, file_sha256, load_gold

IGNORE = -100
# Per dataset, items per stratum drawn for training (class-balanced; FNC-1 is 73% unrelated).
# Halving these (bench/encoder_corpora.py's default) kept the measured gain at half the time.
CORPUS_PER_STRATUM: dict[str, int] = {"fnc1": 150, "arc": 50, "perspectrum": 75,
                                      "climate-fever": 75, "covid-fact": 75}


@dataclass(frozen=True)
class Example:
    """One training pair: thesis, article, target per head (IGNORE where unjudged)."""

    id: str
    origin: str
    group: str  # what a split keeps together (thesis id, body, claim)
    thesis: ThesisConfig
    title: str
    text: str
    targets: dict[str, int] = field(default_factory=dict)


def example_from_item(item: EvalItem) -> Example:
    """Eval item (gold or corpus) → Example with the heads its gold judges."""
    g = item.gold
    t = dict.fromkeys(HEADS, IGNORE)
    if "relevant" in g.scored and g.relevant is not None:
        t["relevant"] = int(bool(g.relevant))
    if g.relevant:
        for head in ("direction", "evidence_type", "strength"):
            value = g.value(head)
            if head in g.scored and value is not None:
                t[head] = CLASSES[head].index(value)
    group = adapters.group_key(item) if item.origin in adapters.DATASETS else item.thesis.id
    return Example(id=item.id, origin=item.origin, group=group, thesis=item.thesis,
                   title=item.title, text=item.text, targets=t)


@dataclass(frozen=True)
class Source:
    """A data file the model was trained on, for the card: path, SHA-256, item count."""

    path: str
    sha256: str
    items: int


def load_written(data: Sequence[str | Path], theses_path: str | Path
                 ) -> tuple[list[EvalItem], ThesesFile, list[Source]]:
    """Gold-format training files + their theses file → items (errors name file, line, field)."""
    theses = load_theses(theses_path)
    items = load_gold(data, theses)
    sources = [Source(str(theses_path), file_sha256([theses_path]), len(theses.thesis))]
    for p in data:
        n = sum(1 for it in items if it.origin == Path(p).stem)
        sources.append(Source(str(p), file_sha256([p]), n))
    return items, theses, sources


def thesis_split(thesis_ids: Iterable[str], *, n_calibration: int, n_heldout: int, seed: int
                 ) -> dict[str, str]:
    """Thesis ids → {id: "train" | "calibration" | "heldout"}, fixed by the seed: the ids are
    ordered by a seeded hash and the first n_heldout held out, the next n_calibration kept for
    calibration (both never trained on)."""
    ids = sorted(set(thesis_ids), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    if n_calibration + n_heldout >= len(ids):
        raise ConfigError(f"{len(ids)} theses cannot spare {n_heldout} held-out and "
                          f"{n_calibration} calibration theses and still train")
    out = {}
    for k, i in enumerate(ids):
        out[i] = "heldout" if k < n_heldout else "calibration" if k < n_heldout + n_calibration \
            else "train"
    return out


def balanced(items: Sequence[EvalItem], per_stratum: int, seed: int) -> list[EvalItem]:
    """Items → at most `per_stratum` of each stratum, drawn by a seeded hash (stable order)."""
    groups: dict[str, list[EvalItem]] = defaultdict(list)
    for it in items:
        groups[it.stratum or ""].append(it)
    out: list[EvalItem] = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda it: hashlib.sha256(
            f"{seed}:{it.id}".encode()).hexdigest())
        out.extend(ranked[:per_stratum])
    return out


def corpus_items(names: Sequence[str], *, corpora: str | Path | None, seed: int,
                 scale: float = 1.0) -> list[EvalItem]:
    """Corpus names → class-balanced training items from their train split (held-out groups
    excluded), `scale` times the default count per stratum."""
    out: list[EvalItem] = []
    for name in names:
        if name not in CORPUS_PER_STRATUM:
            raise ConfigError(f"unknown training corpus {name!r}; known: "
                              f"{', '.join(CORPUS_PER_STRATUM)}")
        items = adapters.load_dataset(name, corpora=corpora, split="train")
        out.extend(balanced(items, max(1, round(CORPUS_PER_STRATUM[name] * scale)), seed))
    return out


FLIP = {0: 1, 1: 0, 2: 2}  # supports <-> undermines; neutral stays neutral (direction indices)


def load_counters(path: str | Path) -> dict[str, str]:
    """Counter-theses file ([[counter]] thesis, statement) → {thesis id: counter statement}."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read counter-theses file: {e.strerror}", path=str(p)) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=str(p)) from e
    out: dict[str, str] = {}
    for n, row in enumerate(data.get("counter", [])):
        if set(row) != {"thesis", "statement"} or not str(row["statement"]).strip():
            raise ConfigError(f"counter {n}: needs exactly 'thesis' and a non-empty 'statement'",
                              path=str(p), key=f"counter.{n}")
        out[str(row["thesis"])] = str(row["statement"]).strip()
    return out


def counter_examples(items: Sequence[EvalItem], counters: dict[str, str]) -> list[Example]:
    """Training items + counter-theses → the same articles judged against the complement of
    their thesis: direction flipped (supports <-> undermines), relevance, type and strength kept
    (evidence for a statement is evidence of the same kind against its complement)."""
    out = []
    for it in items:
        statement = counters.get(it.thesis.id)
        if statement is None:
            continue
        ex = example_from_item(it)
        t = dict(ex.targets)
        if t["direction"] != IGNORE:
            t["direction"] = FLIP[t["direction"]]
        thesis = it.thesis.model_copy(update={"id": f"{it.thesis.id}-counter",
                                              "statement": statement, "trigger": []})
        out.append(Example(id=f"{it.id}~counter", origin=ex.origin, group=ex.group,
                           thesis=thesis, title=ex.title, text=ex.text, targets=t))
    return out
