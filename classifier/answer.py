"""The answer the model writes, and every check on it before it becomes a `records.Label`.

The schema the model sees puts `rationale` first (reason, then decide: with the labels first the
embedded model called almost everything irrelevant), restricts `trigger` to the thesis's trigger
ids, and caps quotes. Cross-field rules and grounding (each quote occurs in the article text,
whitespace and quote characters normalised) are checked here in code, on every backend. A quote
that is near-verbatim (a dropped clause, a changed word) is replaced by the article's own span;
the model's original answer stays on record in the call log.
"""

from __future__ import annotations

import functools
import json
import re
import string
import unicodedata
from difflib import SequenceMatcher
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


_PUNCT = string.punctuation + " "
_STOPS = ".,;:!?"
ALIGN_MIN_WORDS = 5  # shorter quotes must match exactly: too few words to align safely
ALIGN_MIN_COVERAGE = 0.9  # share of the quote's words found, in order, in the span
ALIGN_MAX_STRETCH = 1.6  # the span may hold at most this many times the quote's words (+3)


def _words(text: str) -> list[tuple[str, int, int]]:
    out = []
    for m in re.finditer(r"\S+", text):
        w = normalise(m.group()).strip(_PUNCT)
        if w:
            out.append((w, m.start(), m.end()))
    return out


def align_quote(quote: str, text: str) -> str | None:
    """A near-verbatim quote → the verbatim span of `text` it was copied from, or None.

    Small models copy a sentence but drop a clause or change a word; the label should carry
    the article's own words, not the model's. The span returned is a slice of `text` (so it is
    grounded by construction) that contains at least 90% of the quote's words in order and is
    at most 1.6 times as long. Quotes under 5 words are never aligned.
    """
    q = [w for w, _, _ in _words(quote)]
    if len(q) < ALIGN_MIN_WORDS:
        return None
    spans = _words(text)
    t = [w for w, _, _ in spans]
    i, j, size = SequenceMatcher(None, t, q, autojunk=False).find_longest_match(0, len(t), 0, len(q))
    if size < 3:
        return None
    lo, hi = max(0, i - j - len(q)), min(len(t), i + 2 * len(q) - j)  # room for dropped words
    blocks = [b for b in SequenceMatcher(None, t[lo:hi], q, autojunk=False).get_matching_blocks()
              if b.size]
    limit = ALIGN_MAX_STRETCH * len(q) + 3
    best: tuple[int, int, int] | None = None  # (matched words, first text word, last text word)
    for a in range(len(blocks)):
        for b in range(a, len(blocks)):
            first, last = blocks[a].a, blocks[b].a + blocks[b].size - 1
            if last - first + 1 > limit:
                break
            matched = sum(k.size for k in blocks[a:b + 1])
            if best is None or matched > best[0]:
                best = (matched, first, last)
    if best is None or best[0] < ALIGN_MIN_COVERAGE * len(q):
        return None
    span = text[spans[lo + best[1]][1]:spans[lo + best[2]][2]]
    return span if quote.rstrip()[-1:] in _STOPS else span.rstrip(_STOPS)


def ground_quotes(quotes: list[str], text: str) -> tuple[list[str], list[str]]:
    """Quotes + text → (quotes to keep, quotes that fail): exact ones as written, near-verbatim
    ones replaced by the article's own span (`align_quote`), the rest reported as failing."""
    keep, bad = [], []
    exact = set(quotes) - set(ungrounded(quotes, text))
    for q in quotes:
        span = q if q in exact else align_quote(q, text)
        (keep if span is not None else bad).append(span if span is not None else q)
    return keep, bad


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
            keep, bad = ground_quotes(self.quotes, text)
            if bad:
                raise ValueError(
                    f"these quotes do not occur in the article text: {json.dumps(bad)}; copy "
                    f"quotes word for word from the text between the markers, or use []")
            self.quotes = keep
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
