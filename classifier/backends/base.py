"""The backend seam: one Protocol, the request/attempt records, prices, and the re-ask loop.

A backend turns a `LabelRequest` into a checked `records.Label`. Every attempt, failed or not,
goes to the `record` callback as a `CallRecord` (an `llm_calls` row). Failure classes have one
owner each: transport faults are retried inside the backend (tenacity, bounded, honouring
Retry-After) and end as `TransportError`; invalid or ungrounded answers are re-asked with the
validation error (at most `max_reasks` times) and end as `LabelingFailed`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from classifier.answer import InvalidAnswer, parse_answer
from classifier.config import ThesisConfig
from classifier.errors import BackendUnavailable, LabelingFailed
from classifier.records import Label
from classifier.store.engine import utcnow

# Asking again with the same limits gets the same cut-off answer or the same refusal.
NO_REASK = frozenset({"truncated", "refusal"})

# USD per 1M tokens (input, output). Override or extend with [label.prices] in evidence.toml.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
}


def price_of(model: str, backend: str, prices: dict[str, tuple[float, float]] | None = None
             ) -> tuple[float, float] | None:
    """Model + backend (+ configured prices) → (in, out) USD per 1M tokens; local is free; None if unknown."""
    if backend in ("local", "scripted", "encoder"):
        return (0.0, 0.0)
    table = {**DEFAULT_PRICES, **(prices or {})}
    return table.get(model)


def backend_price(backend: Any, prices: dict[str, tuple[float, float]] | None = None
                  ) -> tuple[float, float] | None:
    """A backend → the (in, out) price its calls pay: the LLM part's for the combined labeler
    (free when it has none), else price_of its own model."""
    if hasattr(backend, "paid_part"):
        part = backend.paid_part
        return (0.0, 0.0) if part is None else price_of(part[1], part[0], prices)
    return price_of(backend.model, backend.name, prices)


def cost_of(tokens_in: int, tokens_out: int, price: tuple[float, float] | None) -> float:
    """Token counts + price → USD (0 when the price is unknown)."""
    if price is None:
        return 0.0
    return (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000


@dataclass(frozen=True)
class LabelRequest:
    """What a backend needs for one (article, thesis) judgment."""

    messages: tuple[dict[str, str], ...]
    thesis: ThesisConfig
    schema: dict[str, Any]
    text: str  # the full article text quotes are checked against
    prompt_hash: str
    schema_hash: str
    max_reasks: int = 2
    max_tokens: int = 400
    title: str = ""  # the article's title (the encoder reads it; LLMs get it inside `messages`)


@dataclass
class CallRecord:
    """One attempt, as stored in `llm_calls`."""

    backend: str
    model: str
    prompt_hash: str
    schema_hash: str | None
    request: Any
    response: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempt: int = 1
    error_type: str | None = None
    error_detail: str | None = None
    created_at: datetime = field(default_factory=utcnow)


Record = Callable[[CallRecord], None]


class Backend(Protocol):
    """A labeling backend: `label(request, record) → Label`, raising LabelingFailed/TransportError."""

    name: str
    model: str

    def label(self, request: LabelRequest, record: Record) -> Label: ...


@dataclass(frozen=True)
class Completion:
    """One raw model answer (what `complete` returns for the shared re-ask loop)."""

    text: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None
    refusal: str | None = None


def reask_loop(complete: Callable[[list[dict[str, str]]], Completion], request: LabelRequest,
               record: Record, *, backend: str, model: str,
               price: tuple[float, float] | None = (0.0, 0.0)) -> Label:
    """complete(messages) + request → Label after at most max_reasks re-asks, every attempt recorded.

    Exceptions from `complete` (transport faults) are recorded and propagate unchanged.
    """
    messages = [dict(m) for m in request.messages]
    last: InvalidAnswer | None = None
    raw: str | None = None
    for attempt in range(1, request.max_reasks + 2):
        started = time.perf_counter()
        call = CallRecord(backend=backend, model=model, prompt_hash=request.prompt_hash,
                          schema_hash=request.schema_hash, attempt=attempt,
                          request={"messages": messages[1:] if attempt == 1 else messages[-2:],
                                   "system_sha256": _sha(messages[0]["content"]),
                                   "max_tokens": request.max_tokens})
        try:
            out = complete(messages)
        except BackendUnavailable:
            raise  # nothing was sent: no attempt to record
        except Exception as e:
            call.latency_ms = (time.perf_counter() - started) * 1000
            call.error_type = getattr(e, "error_type", type(e).__name__)
            call.error_detail = str(e)[:2000]
            record(call)
            raise
        call.latency_ms = (time.perf_counter() - started) * 1000
        raw = out.text if out.text is not None else out.refusal
        call.response, call.tokens_in, call.tokens_out = raw, out.tokens_in, out.tokens_out
        call.cost_usd = cost_of(out.tokens_in, out.tokens_out, price)
        try:
            label = parse_answer(out.text, request.thesis, request.text,
                                 finish_reason=out.finish_reason, refusal=out.refusal)
        except InvalidAnswer as e:
            last = e
            call.error_type, call.error_detail = e.error_type, str(e)
            record(call)
            if e.error_type in NO_REASK:
                raise LabelingFailed(str(e), error_type=e.error_type, attempts=attempt,
                                     last_raw=raw) from None
            messages += [{"role": "assistant", "content": raw or ""},
                         {"role": "user", "content": f"Your answer was rejected: {e} Answer "
                                                     f"again with the corrected JSON object only."}]
            continue
        record(call)
        return label
    assert last is not None
    raise LabelingFailed(f"answer still invalid after {request.max_reasks} re-asks: {last}",
                         error_type=last.error_type, attempts=request.max_reasks + 1, last_raw=raw)


def _sha(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def dumps(obj: Any) -> str:
    """Object → compact JSON (for raw answers the scripted backend serves)."""
    return json.dumps(obj, ensure_ascii=False)
