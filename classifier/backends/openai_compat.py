"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp server): the only module
that imports `openai` and `instructor`.

One owner per failure class:
- transport faults (timeouts, connection errors, 5xx, 429) are retried here with tenacity,
  honouring Retry-After up to `retry_after_cap_s`; the SDK's own retries are off
  (`max_retries=0`) so attempts don't multiply;
- invalid or ungrounded answers are re-asked by instructor with the validation error, at most
  `max_reasks` times; the grounding check runs inside the answer model's validator.
Every HTTP attempt becomes a CallRecord; instructor's `parse:error` hook marks the attempts whose
answer failed validation. The instructor mode is per server: JSON_SCHEMA for OpenAI (and vLLM
when set), TOOLS for other base URLs (llama_cpp.server answers JSON_SCHEMA requests with a 500).
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import instructor
import openai
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from classifier.answer import to_label
from classifier.backends.base import CallRecord, LabelRequest, Record, cost_of, price_of
from classifier.config import LabelSettings
from classifier.errors import BackendUnavailable, LabelingFailed, TransportError
from classifier.records import Label

MODES = {"json_schema": instructor.Mode.JSON_SCHEMA, "tools": instructor.Mode.TOOLS,
         "json": instructor.Mode.JSON}


class _Stop(Exception):
    """An answer we reject before instructor parses it (refusal, truncation): no re-ask."""

    def __init__(self, error_type: str, message: str, raw: str | None) -> None:
        self.error_type, self.raw = error_type, raw
        super().__init__(message)


@dataclass
class _Sink:
    record: Record
    request: LabelRequest
    calls: list[CallRecord] = field(default_factory=list)


_SINK: contextvars.ContextVar[_Sink] = contextvars.ContextVar("evidence_llm_sink")


def default_mode(base_url: str | None) -> str:
    """Base URL → instructor mode name: json_schema for OpenAI itself, tools for other servers."""
    if not base_url or "api.openai.com" in base_url:
        return "json_schema"
    return "tools"


def _transport_type(e: BaseException) -> str | None:
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection"
    if isinstance(e, openai.RateLimitError):
        return "rate_limited"
    if isinstance(e, openai.InternalServerError) or (
            isinstance(e, openai.APIStatusError) and e.status_code >= 500):
        return "server_error"
    return None


def _retry_after(e: BaseException) -> float | None:
    response = getattr(e, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; fall back to our backoff


def _raw_of(response: Any) -> tuple[str | None, str | None, str | None]:
    """ChatCompletion → (answer text or tool arguments, refusal, finish_reason)."""
    choice = response.choices[0]
    msg = choice.message
    text = msg.content
    if msg.tool_calls:
        text = msg.tool_calls[0].function.arguments
    return text, getattr(msg, "refusal", None), choice.finish_reason


class OpenAIBackend:
    """OpenAI SDK (retries off) + instructor (re-asks) + tenacity (transport), one model."""

    name = "openai"

    def __init__(self, model: str, *, settings: LabelSettings | None = None,
                 base_url: str | None = None, api_key: str | None = None) -> None:
        self.settings = settings or LabelSettings()
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise BackendUnavailable("the openai backend needs OPENAI_API_KEY (or OPENAI_BASE_URL "
                                     "for a local OpenAI-compatible server)")
        mode_name = (os.environ.get("EVIDENCE_OPENAI_MODE") or self.settings.openai_mode
                     or default_mode(self.base_url))
        if mode_name not in MODES:
            raise BackendUnavailable(f"unknown EVIDENCE_OPENAI_MODE {mode_name!r}; use one of "
                                     f"{sorted(MODES)}")
        self.mode = mode_name
        self.price = price_of(model, self.name, self.settings.prices)
        self.client = openai.OpenAI(api_key=key or "not-needed", base_url=self.base_url,
                                    max_retries=0, timeout=self.settings.timeout_s)
        self._raw_create = self.client.chat.completions.create
        # instructor patches whatever `create` it finds: ours retries transport faults and records
        self.client.chat.completions.create = self._create  # type: ignore[method-assign]
        self.instructor = instructor.from_openai(self.client, mode=MODES[mode_name])
        self.instructor.on("parse:error", self._on_parse_error)

    # -- one HTTP request, retried on transport faults ------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = _retry_after(exc) if exc else None
        backoff = min(2.0 ** (state.attempt_number - 1), 8.0)
        return min(after if after is not None else backoff, self.settings.retry_after_cap_s)

    def _create(self, *args: Any, **kwargs: Any) -> Any:
        sink = _SINK.get()
        retrying = Retrying(stop=stop_after_attempt(self.settings.max_transport_attempts),
                            wait=self._wait, reraise=True,
                            retry=retry_if_exception(lambda e: _transport_type(e) is not None))
        try:
            for attempt in retrying:
                with attempt:
                    return self._one(sink, kwargs)
        except openai.APIStatusError as e:
            kind = _transport_type(e)
            if kind:
                raise TransportError(f"{kind} after {attempt.retry_state.attempt_number} "
                                     f"attempts: {e}", error_type=kind,
                                     attempts=len(sink.calls)) from e
            if e.status_code in (401, 403, 404):
                raise BackendUnavailable(f"{self.base_url or 'OpenAI'} refused model "
                                         f"{self.model!r}: HTTP {e.status_code}: {e}") from e
            raise _Stop(f"http_{e.status_code}", f"HTTP {e.status_code}: {e}", None) from e
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            kind = _transport_type(e) or "connection"
            raise TransportError(f"{kind} after {attempt.retry_state.attempt_number} attempts: "
                                 f"{e}", error_type=kind, attempts=len(sink.calls)) from e
        raise AssertionError("unreachable")

    def _one(self, sink: _Sink, kwargs: dict[str, Any]) -> Any:
        messages = kwargs.get("messages", [])
        call = CallRecord(backend=self.name, model=self.model,
                          prompt_hash=sink.request.prompt_hash,
                          schema_hash=sink.request.schema_hash, attempt=len(sink.calls) + 1,
                          request={"mode": self.mode, "messages": messages[1:],
                                   "system_sha256": _sha(messages[0]["content"]) if messages else None,
                                   **{k: v for k, v in kwargs.items()
                                      if k in ("tools", "tool_choice", "response_format",
                                               "max_tokens", "temperature")}})
        started = time.perf_counter()
        try:
            response = self._raw_create(**kwargs)
        except openai.APIError as e:
            call.latency_ms = (time.perf_counter() - started) * 1000
            call.error_type = _transport_type(e) or type(e).__name__
            call.error_detail = str(e)[:2000]
            call.response = _body(e)
            self._keep(sink, call)
            raise
        call.latency_ms = (time.perf_counter() - started) * 1000
        usage = getattr(response, "usage", None)
        call.tokens_in = getattr(usage, "prompt_tokens", 0) or 0
        call.tokens_out = getattr(usage, "completion_tokens", 0) or 0
        call.cost_usd = cost_of(call.tokens_in, call.tokens_out, self.price)
        text, refusal, finish = _raw_of(response)
        call.response = text if text is not None else refusal
        if refusal:
            call.error_type, call.error_detail = "refusal", refusal[:2000]
            self._keep(sink, call)
            raise _Stop("refusal", f"the model refused: {refusal[:200]}", refusal)
        if finish == "length":
            call.error_type = "truncated"
            call.error_detail = "finish_reason=length: the answer was cut off"
            self._keep(sink, call)
            raise _Stop("truncated", "the answer was cut off (finish_reason=length)", text)
        self._keep(sink, call)
        return response

    @staticmethod
    def _keep(sink: _Sink, call: CallRecord) -> None:
        sink.calls.append(call)
        sink.record(call)

    # -- instructor hook: mark the attempt whose answer failed validation ------------------------

    def _on_parse_error(self, error: Exception, *args: Any, **kwargs: Any) -> None:
        sink = _SINK.get(None)
        if sink is None or not sink.calls:
            return
        call = sink.calls[-1]
        call.error_type = _parse_error_type(error)
        call.error_detail = str(error)[:2000]

    # -- the backend method ----------------------------------------------------------------------

    def label(self, request: LabelRequest, record: Record) -> Label:
        """Request → Label via instructor; LabelingFailed / TransportError with attempts recorded."""
        sink = _Sink(record=record, request=request)
        token = _SINK.set(sink)
        try:
            answer = self.instructor.chat.completions.create(
                model=self.model, messages=[dict(m) for m in request.messages],
                response_model=_answer_model(request), max_retries=request.max_reasks,
                context={"text": request.text}, temperature=0,
                max_tokens=request.max_tokens)
        except Exception as e:  # instructor wraps whatever ended its loop; unwrap it
            cause = _root(e)
            last_raw = sink.calls[-1].response if sink.calls else None
            if isinstance(cause, (TransportError, BackendUnavailable)):
                raise cause from e
            if isinstance(cause, _Stop):
                raise LabelingFailed(str(cause), error_type=cause.error_type,
                                     attempts=len(sink.calls), last_raw=last_raw) from e
            if isinstance(cause, (ValidationError, json.JSONDecodeError)) or _is_parse(cause):
                kind = sink.calls[-1].error_type if sink.calls else _parse_error_type(cause)
                raise LabelingFailed(
                    f"answer still invalid after {request.max_reasks} re-asks: "
                    f"{_short(cause)}", error_type=kind or "schema", attempts=len(sink.calls),
                    last_raw=last_raw) from e
            if "incomplete" in type(cause).__name__.lower():
                raise LabelingFailed("the answer was cut off", error_type="truncated",
                                     attempts=len(sink.calls), last_raw=last_raw) from e
            raise TransportError(f"{type(cause).__name__}: {cause}", error_type=type(cause).__name__,
                                 attempts=len(sink.calls)) from e
        finally:
            _SINK.reset(token)
        try:
            return to_label(answer)
        except ValueError as e:  # already checked in the validator; kept for safety
            raise LabelingFailed(str(e), error_type="schema", attempts=len(sink.calls),
                                 last_raw=sink.calls[-1].response if sink.calls else None) from e


def _answer_model(request: LabelRequest) -> Any:
    from classifier.answer import answer_model
    return answer_model(request.thesis)


def _root(e: BaseException) -> BaseException:
    """Instructor's wrapper → the first of our own errors in the cause chain, else the deepest."""
    seen, chain = e, [e]
    while seen.__cause__ is not None and seen.__cause__ not in chain:
        seen = seen.__cause__
        chain.append(seen)
    for c in chain:
        if isinstance(c, (TransportError, BackendUnavailable, _Stop)):
            return c
    for c in chain:
        if isinstance(c, (ValidationError, json.JSONDecodeError)) or _is_parse(c):
            return c
    return chain[-1]


def _is_parse(e: BaseException) -> bool:
    return type(e).__name__ in ("ResponseParsingError", "AsyncValidationError")


def _parse_error_type(error: BaseException) -> str:
    text = str(error)
    if "do not occur in the article text" in text:
        return "ungrounded_quote"
    if isinstance(error, json.JSONDecodeError) or "Invalid JSON" in text or "json_invalid" in text:
        return "malformed_json"
    return "schema"


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:500]


def _body(e: openai.APIError) -> str | None:
    response = getattr(e, "response", None)
    try:
        return response.text[:4000] if response is not None else None
    except Exception:  # a streamed or closed body: the error text is enough
        return None


def _sha(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()
