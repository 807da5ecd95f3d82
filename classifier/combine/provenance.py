"""What a combined label keeps about its two opinions: `labels.proposals` (JSON) and
`labels.disagreement`.

    {"format": 1,
     "encoder": {"model": "1f7fd690a8b0", "relevant": true, "evidence_type": "direct",
                 "direction": "undermines", "strength": "moderate", "confidence": 0.41,
                 "probs": {"relevant": [0.1, 0.9], "direction": [0.2, 0.7, 0.1], ...},
                 "quotes": ["..."]},
     "llm": {"model": "local:qwen2.5-...", "relevant": true, "evidence_type": "direct",
             "direction": "supports", "strength": "strong", "trigger": "above-85",
             "confidence": 0.9, "rationale": "...", "quotes": ["..."]}      # or null
     "llm_status": "answered" | "skipped" | "failed",
     "llm_reason": null | "llm = uncertain: the encoder is sure (0.93 >= 0.80)" | "<error>",
     "decided": {"relevant": "combiner", "evidence_type": "encoder", "direction": "llm",
                 "strength": "combiner", "confidence": "combiner", "rationale": "llm",
                 "quotes": "llm", "trigger": "llm"},       # "encoder" | "llm" | "combiner" | "none"
     "combiner": "c-3f2a..." | null,                         # null: the encoder decides class fields
     "disagree": ["direction", "strength"]}                  # class fields where the two differ

The encoder side is always there (it runs on every pair); the LLM side is null when it was skipped
or failed, and then `disagree` is [] and `labels.disagreement` is null (one opinion only).
"""

from __future__ import annotations

from typing import Any

# The label fields both sides propose and the combiner decides (trigger and text are the LLM's).
CLASS_FIELDS = ("relevant", "evidence_type", "direction", "strength")
FORMAT = 1


def opinion(label: Any, *, model: str, probs: dict[str, list[float]] | None = None,
            text: bool = False) -> dict[str, Any]:
    """A records.Label → one side's proposal as stored (probs for the encoder; trigger, rationale
    and quotes for the LLM when `text`)."""
    out: dict[str, Any] = {"model": model, "relevant": label.relevant,
                           "evidence_type": _v(label.evidence_type), "direction": _v(label.direction),
                           "strength": _v(label.strength), "confidence": round(label.confidence, 4)}
    if probs is not None:
        out["probs"] = probs
    if text:
        out.update(trigger=label.trigger, rationale=label.rationale)
    out["quotes"] = list(label.quotes)
    return out


def _v(x: Any) -> Any:
    return getattr(x, "value", x)


def differing(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Two proposals → the class fields on which they differ (relevance first; when both say not
    relevant nothing else is compared; [] when either is missing)."""
    if not a or not b:
        return []
    if a["relevant"] != b["relevant"]:
        return ["relevant"]
    if not a["relevant"]:
        return []
    return [f for f in CLASS_FIELDS[1:] if a.get(f) != b.get(f)]


def disagreement(proposals: dict[str, Any] | None) -> int | None:
    """Stored proposals → the number of class fields the two sides differ on (None: one side)."""
    if not proposals or not proposals.get("llm") or not proposals.get("encoder"):
        return None
    return len(differing(proposals["encoder"], proposals["llm"]))
