"""COVID-Fact (train split): claim = thesis statement, its evidence sentences = article.

Mapping: SUPPORTED → relevant, supports; REFUTED → relevant, undermines. Scored fields:
relevant, direction. Caveat from the corpus notes: every REFUTED claim is a machine-made
counter-claim (salient words swapped by a language model), so it teaches direction flips, not
realistic refuting news. Only the train file is read; the dev file stays out of training.
"""

from __future__ import annotations

from pathlib import Path

from classifier.errors import ConfigError
from classifier.evaluation.adapters import claim_thesis, jsonl_records
from classifier.evaluation.gold import EvalItem, GoldTarget

MAPPING = ("claim = thesis statement, evidence sentences = article; SUPPORTED → supports; "
           "REFUTED → undermines (both relevant); train split only; scored: relevant, direction")
LABELS = {"SUPPORTED": "supports", "REFUTED": "undermines"}
SCOPE = "Whether the reported evidence confirms or contradicts this claim about COVID-19."


def load(corpora: Path) -> list[EvalItem]:
    """Corpora folder → one EvalItem per COVID-Fact train claim."""
    path = corpora / "covid-fact" / "covidfact.train.jsonl"
    items = []
    for n, obj in jsonl_records(path):
        label = obj.get("label")
        if label not in LABELS:
            raise ConfigError(f"unknown label {label!r}", path=str(path), line=n)
        text = " ".join(s.lstrip("> ").strip() for s in obj["evidence"]).strip()
        if not text:
            continue
        items.append(EvalItem(
            id=f"covidfact-{n}", thesis=claim_thesis("covidfact", obj["claim"].strip(), scope=SCOPE),
            title="", text=text, source=obj.get("gold_source"),
            gold=GoldTarget(relevant=True, direction=LABELS[label],
                            scored=frozenset({"relevant", "direction"})),
            origin="covid-fact", stratum=label))
    return items
