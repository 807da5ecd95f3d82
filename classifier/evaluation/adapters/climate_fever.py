"""CLIMATE-FEVER (dev half): claim = thesis statement, one Wikipedia evidence sentence = article.

Mapping (evidence level): SUPPORTS → relevant, supports; REFUTES → relevant, undermines.
NOT_ENOUGH_INFO pairs are left out: the set's own notes say they mix off-topic and on-topic but
inconclusive sentences, so they map to neither "not relevant" nor "neutral" reliably.
Scored fields: relevant, direction. The article's title is the Wikipedia page name.
"""

from __future__ import annotations

import json
from pathlib import Path

from classifier.errors import ConfigError
from classifier.evaluation.adapters import claim_thesis
from classifier.evaluation.gold import EvalItem, GoldTarget

MAPPING = ("claim = thesis statement, evidence sentence = article; SUPPORTS → supports; "
           "REFUTES → undermines (both relevant); NOT_ENOUGH_INFO left out; scored: relevant, direction")
LABELS = {"SUPPORTS": "supports", "REFUTES": "undermines"}
SCOPE = "Whether the evidence confirms or contradicts this claim about climate."


def load(corpora: Path) -> list[EvalItem]:
    """Corpora folder → one EvalItem per SUPPORTS/REFUTES claim–evidence pair."""
    path = corpora / "climate-fever" / "climate-fever.dev.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read dataset file: {e.strerror}", path=str(path)) from e
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not valid JSON: {e.msg}", path=str(path), line=n) from e
        thesis = claim_thesis("cfever", obj["claim"].strip(), scope=SCOPE)
        for k, ev in enumerate(obj["evidences"]):
            label = ev["evidence_label"]
            if label not in LABELS:
                continue
            items.append(EvalItem(
                id=f"cfever-{obj['claim_id']}-{k}", thesis=thesis, title=ev.get("article") or "",
                text=ev["evidence"].strip(), source="wikipedia",
                gold=GoldTarget(relevant=True, direction=LABELS[label],
                                scored=frozenset({"relevant", "direction"})),
                origin="climate-fever", stratum=label))
    return items
