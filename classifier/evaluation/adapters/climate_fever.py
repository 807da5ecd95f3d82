"""CLIMATE-FEVER (dev half): claim = thesis statement, one Wikipedia evidence sentence = article.

Mapping (evidence level): SUPPORTS → relevant, supports; REFUTES → relevant, undermines.
NOT_ENOUGH_INFO pairs are left out: the set's own notes say they mix off-topic and on-topic but
inconclusive sentences, so they map to neither "not relevant" nor "neutral" reliably.
Scored fields: relevant, direction. The article's title is the Wikipedia page name.
"""

from __future__ import annotations

from pathlib import Path

from classifier.evaluation.adapters import claim_thesis, jsonl_records
from classifier.evaluation.gold import EvalItem, GoldTarget

MAPPING = ("claim = thesis statement, evidence sentence = article; SUPPORTS → supports; "
           "REFUTES → undermines (both relevant); NOT_ENOUGH_INFO left out; scored: relevant, direction")
LABELS = {"SUPPORTS": "supports", "REFUTES": "undermines"}
SCOPE = "Whether the evidence confirms or contradicts this claim about climate."


def load(corpora: Path) -> list[EvalItem]:
    """Corpora folder → one EvalItem per SUPPORTS/REFUTES claim–evidence pair."""
    path = corpora / "climate-fever" / "climate-fever.dev.jsonl"
    items = []
    for _, obj in jsonl_records(path):
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
