"""FNC-1 and ARC (FNC-1 format): headline = the claim, body = the article.

Mapping: unrelated → not relevant; agree → relevant, supports; disagree → relevant, undermines;
discuss → relevant, neutral. Scored fields: relevant, direction (the sets have no evidence type,
strength or trigger). `stratum` keeps the original stance for the official FNC-1 score.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from classifier.errors import ConfigError
from classifier.evaluation.adapters import claim_thesis
from classifier.evaluation.gold import EvalItem, GoldTarget

MAPPING = ("headline = claim (thesis statement), body = article; unrelated → not relevant; "
           "agree → supports; disagree → undermines; discuss → neutral; scored: relevant, direction")
STANCES = {"unrelated": (False, None), "agree": (True, "supports"),
           "disagree": (True, "undermines"), "discuss": (True, "neutral")}
SCOPE = ("Whether the article reports on this claim, and whether it confirms it, denies it, or "
         "reports it without taking a side.")

csv.field_size_limit(sys.maxsize)


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"cannot read dataset file: {e.strerror}", path=str(path)) from e


def load_pairs(bodies_csv: Path, stances_csv: Path, *, prefix: str) -> list[EvalItem]:
    """FNC-format bodies + stances CSVs → one EvalItem per stance row (id = prefix-rownumber)."""
    bodies = {r["Body ID"]: r["articleBody"] for r in _read(bodies_csv)}
    items = []
    for n, row in enumerate(_read(stances_csv), start=1):
        stance = row["Stance"].strip()
        if stance not in STANCES:
            raise ConfigError(f"unknown stance {stance!r}", path=str(stances_csv), line=n + 1)
        body = bodies.get(row["Body ID"])
        if body is None:
            raise ConfigError(f"unknown Body ID {row['Body ID']!r}", path=str(stances_csv), line=n + 1)
        relevant, direction = STANCES[stance]
        headline = row["Headline"].strip()
        items.append(EvalItem(
            id=f"{prefix}-{n}", thesis=claim_thesis(prefix, headline, scope=SCOPE), title="",
            text=body.strip(), gold=GoldTarget(relevant=relevant, direction=direction,
                                               scored=frozenset({"relevant", "direction"})),
            origin=prefix, stratum=stance))
    return items


def load_fnc1(corpora: Path) -> list[EvalItem]:
    """Corpora folder → FNC-1 training pairs (49,972)."""
    d = corpora / "fnc-1"
    return load_pairs(d / "train_bodies.csv", d / "train_stances.csv", prefix="fnc1")


def load_arc(corpora: Path) -> list[EvalItem]:
    """Corpora folder → ARC training pairs in FNC-1 format (14,233)."""
    d = corpora / "arc-fnc"
    return load_pairs(d / "arc_bodies.csv", d / "arc_stances_train.csv", prefix="arc")
