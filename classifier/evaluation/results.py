"""What a run stores per item: the gold, the prediction (or the failure) and what it cost."""

from __future__ import annotations

from classifier.answer import ungrounded
from classifier.evaluation.gold import FIELDS, EvalItem, GoldTarget
from classifier.records import Label, Record


class ItemResult(Record):
    """One item of a run: one line of `predictions.jsonl`."""

    id: str
    thesis: str
    origin: str
    stratum: str | None = None
    gold: GoldTarget
    pred: dict | None = None  # judged fields + confidence, rationale, quotes; None when it failed
    error_type: str | None = None
    error: str | None = None
    quotes_total: int = 0
    quotes_found: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0

    @property
    def failed(self) -> bool:
        """True when the labeler produced no label for this item."""
        return self.pred is None

    def pred_value(self, field: str) -> str | bool | None:
        """Field → the predicted value (None for null or for a failure)."""
        return None if self.pred is None else self.pred.get(field)

    def matches(self) -> bool:
        """True when the prediction equals the gold on every scored field."""
        if self.pred is None:
            return False
        return all(self.pred.get(f) == self.gold.value(f) for f in FIELDS if f in self.gold.scored)


def quotes_grounded(quotes: list[str], text: str) -> int:
    """Quotes + article text → how many occur in the text (normalised as the labeler checks)."""
    return len(quotes) - len(ungrounded(quotes, text))


def result_from_label(item: EvalItem, label: Label) -> dict:
    """A label for an item → the `pred` dict and the grounding counts of an ItemResult."""
    pred = label.model_dump(mode="json")
    if label.proposals is not None:  # the combined labeler's two opinions, kept per item
        pred["proposals"] = label.proposals
    found = quotes_grounded(label.quotes, item.text)
    return {"pred": pred, "quotes_total": len(label.quotes), "quotes_found": found}
