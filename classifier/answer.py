"""The answer the model writes, and every check on it before it becomes a `records.Label`.

The schema the model sees puts `rationale` first (reason, then decide: with the labels first the
embedded model called almost everything irrelevant), restricts `trigger` to the thesis's trigger
ids, and caps quotes. Cross-field rules and grounding (each quote occurs in the article text,
whitespace and quote characters normalised) are checked here in code, on every backend.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)

from classifier.config import ThesisConfig
from classifier.records import Direction, EvidenceType, Label, Strength

MAX_QUOTES = 3
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "`": "'", "\u00b4": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
                         "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
                         "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "..."})
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|i can(?:no|')t|i cannot|i won'?t|as an ai)",
                      re.IGNORECASE)


class InvalidAnswer(Exception):
    """An answer failed a check; `error_type` is a stable code, the message goes back to the model."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(message)


def normalise(text: str) -> str:
    """Text → NFKC, straight quotes and dashes, single spaces, case-folded (for grounding checks)."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return re.sub(r"\s+", " ", text).strip().casefold()


def ungrounded(quotes: list[str], text: str) -> list[str]:
    """Quotes + article text → the quotes that do not occur in the text (after normalising)."""
    hay = normalise(text)
    bad = []
    for q in quotes:
        needle = normalise(q).strip("\"' ")
        if not needle or needle not in hay:
            bad.append(q)
    return bad


class AnswerBase(BaseModel):
    """Fields in the order the model writes them; converted to `records.Label` after checks."""

    model_config = ConfigDict(extra="forbid")

    rationale: str = Field(description="At most 3 sentences: what the article reports and why "
                                       "that decides the fields below.")
    quotes: list[str] = Field(max_length=MAX_QUOTES,
                              description="Up to 3 spans copied exactly from the article text.")
    relevant: bool
    evidence_type: EvidenceType | None
    direction: Direction | None
    strength: Strength | None
    trigger: str | None
    confidence: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> AnswerBase:
        to_label(self)  # cross-field rules of the spec
        text = (info.context or {}).get("text")
        if text is not None:
            bad = ungrounded(self.quotes, text)
            if bad:
                raise ValueError(
                    f"these quotes do not occur in the article text: {json.dumps(bad)}; copy "
                    f"quotes word for word from the text between the markers, or use []")
        return self


@functools.lru_cache(maxsize=64)
def _model_for(trigger_ids: tuple[str, ...]) -> type[AnswerBase]:
    trigger_type: Any = Literal[trigger_ids] | None if trigger_ids else None  # type: ignore[valid-type]
    return create_model("LabelAnswer", __base__=AnswerBase,
                        trigger=(trigger_type, Field(description="A trigger id, or null.")))


def answer_model(thesis: ThesisConfig) -> type[AnswerBase]:
    """Thesis → the pydantic answer model whose `trigger` allows only that thesis's trigger ids."""
    return _model_for(tuple(t.id for t in thesis.trigger))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].split("/")[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "title")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def answer_schema(thesis: ThesisConfig) -> dict[str, Any]:
    """Thesis → the JSON schema the model sees: refs inlined, all keys required, rationale first."""
    raw = answer_model(thesis).model_json_schema()
    schema = _inline(raw, raw.get("$defs", {}))
    schema["required"] = list(schema["properties"])
    schema["additionalProperties"] = False
    return schema


def to_label(answer: AnswerBase) -> Label:
    """Checked answer → records.Label (raises ValueError on the spec's cross-field rules)."""
    try:
        return Label(relevant=answer.relevant, evidence_type=answer.evidence_type,
                     direction=answer.direction, strength=answer.strength, trigger=answer.trigger,
                     confidence=answer.confidence, rationale=answer.rationale[:1200],
                     quotes=list(answer.quotes))
    except ValidationError as e:
        raise ValueError("; ".join(err["msg"].removeprefix("Value error, ")
                                   for err in e.errors())) from None


def parse_answer(raw: str | None, thesis: ThesisConfig, text: str, *,
                 finish_reason: str | None = None, refusal: str | None = None) -> Label:
    """Raw model output + thesis + article text → Label, or InvalidAnswer with a type and a hint."""
    if refusal:
        raise InvalidAnswer("refusal", f"the model refused: {refusal[:200]}")
    if finish_reason == "length":
        raise InvalidAnswer("truncated", "the answer was cut off before the JSON object ended; "
                                         "answer again, shorter (rationale at most 3 sentences)")
    if raw is None or not raw.strip():
        raise InvalidAnswer("empty", "the answer was empty; answer with the JSON object")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        if "{" not in raw and _REFUSAL.search(raw):
            raise InvalidAnswer("refusal", f"the model refused: {raw[:200]}") from None
        raise InvalidAnswer("malformed_json", f"the answer is not valid JSON ({e.msg} at "
                                              f"character {e.pos}); answer with one JSON object") from None
    if not isinstance(data, dict):
        raise InvalidAnswer("malformed_json", "the answer must be a JSON object")
    try:
        answer = answer_model(thesis).model_validate(data, context={"text": text})
    except ValidationError as e:
        return _raise_validation(e)
    return to_label(answer)


def _raise_validation(e: ValidationError) -> Label:
    msgs = []
    kind = "schema"
    for err in e.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if "do not occur in the article text" in msg:
            kind = "ungrounded_quote"
        loc = ".".join(str(p) for p in err["loc"])
        msgs.append(f"{loc}: {msg}" if loc else msg)
    raise InvalidAnswer(kind, "the JSON object is invalid: " + "; ".join(msgs)) from None
