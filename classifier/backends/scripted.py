"""A scripted backend: answers from a queue, for tests and plumbing demos; never the default.

Queued items are `records.Label` objects, dicts, raw strings (served as the model's text, so
malformed or ungrounded answers go through the same checks and re-asks as a real model's) or
exceptions (raised as if the backend had failed). An empty queue raises BackendUnavailable,
which stops a run cleanly with the remaining pairs still pending.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from classifier.backends.base import Completion, LabelRequest, Record, dumps, price_of, reask_loop
from classifier.errors import BackendUnavailable
from classifier.prompt import estimate_tokens
from classifier.records import Label

_ORDER = ("rationale", "quotes", "relevant", "evidence_type", "direction", "strength", "trigger",
          "confidence")


class ScriptedBackend:
    """Serves queued answers in order; records the messages it was sent in `.seen`."""

    name = "scripted"

    def __init__(self, items: Iterable[Any] = (), *, model: str = "scripted") -> None:
        self.model = model
        self._queue: deque[Any] = deque()
        self.seen: list[list[dict[str, str]]] = []
        self.enqueue(items)

    def enqueue(self, items: Iterable[Any]) -> ScriptedBackend:
        """Labels / dicts / raw strings / exceptions → appended to the queue (returns self)."""
        for item in items:
            if isinstance(item, Label):
                data = item.model_dump(mode="json")
                item = dumps({k: data[k] for k in _ORDER})
            elif isinstance(item, dict):
                item = dumps(item)
            elif not isinstance(item, (str, BaseException)):
                raise TypeError(f"cannot script {type(item).__name__}")
            self._queue.append(item)
        return self

    def __len__(self) -> int:
        return len(self._queue)

    def _complete(self, messages: list[dict[str, str]]) -> Completion:
        self.seen.append([dict(m) for m in messages])
        if not self._queue:
            raise BackendUnavailable("the scripted backend's queue is empty")
        item = self._queue.popleft()
        if isinstance(item, BaseException):
            raise item
        return Completion(text=item, tokens_in=sum(estimate_tokens(m["content"]) for m in messages),
                          tokens_out=estimate_tokens(item), finish_reason="stop")

    def label(self, request: LabelRequest, record: Record) -> Label:
        """Request → Label from the next queued answer(s), re-asking on invalid ones."""
        return reask_loop(self._complete, request, record, backend=self.name, model=self.model,
                          price=price_of(self.model, self.name))
