"""The embedded backend: llama-cpp-python running a GGUF model in-process (no server, no network).

Output is constrained by a grammar llama.cpp builds from the JSON schema: llama-cpp-python 0.3.36
honours `response_format={"type": "json_object", "schema": ...}` (it silently ignores OpenAI's
`{"type": "json_schema"}`). Temperature 0 and a fixed seed make answers repeatable. One `Llama`
per model file is kept for the process: it keeps its KV cache, so the fixed system prompt is
evaluated once and reused as the prefix of every later call.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from classifier import model as embedded
from classifier.backends.base import Completion, LabelRequest, Record, reask_loop
from classifier.config import LabelSettings
from classifier.errors import BackendUnavailable
from classifier.records import Label

N_CTX = 4096
_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()  # one Llama is not safe to call from two threads at once


def load(path: str, *, seed: int = 42, n_ctx: int = N_CTX) -> Any:
    """GGUF path → a cached llama_cpp.Llama (BackendUnavailable if llama-cpp-python is missing)."""
    with _LOCK:
        if path in _MODELS:
            return _MODELS[path]
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise BackendUnavailable(
                "the embedded backend needs llama-cpp-python: pip install 'evidence-desk[local]' "
                "(or use --model openai:<model> with OPENAI_API_KEY / OPENAI_BASE_URL)") from e
        if not Path(path).is_file():
            raise BackendUnavailable(f"model file not found: {path}")
        threads = int(os.environ.get("EVIDENCE_THREADS", "0")) or default_threads()
        try:
            with _weight_repacking(os.environ.get("EVIDENCE_LLAMA_REPACK") == "1"):
                llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads,
                            n_threads_batch=threads, seed=seed, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise BackendUnavailable(f"llama.cpp cannot load {path}: {e}") from e
        if not _MODELS:
            atexit.register(close_all)
        _MODELS[path] = llm
        return llm


def close_all() -> None:
    """Free every loaded model now (at exit: llama-cpp-python's own `__del__` runs after the
    interpreter has torn down its modules and prints "Exception ignored ... TypeError")."""
    with _LOCK:
        while _MODELS:
            _, llm = _MODELS.popitem()
            with contextlib.suppress(Exception):
                llm.close()


def default_threads() -> int:
    """→ llama.cpp threads: every CPU this process may use, at most 8 (EVIDENCE_THREADS overrides).

    Measured on the 2-core build machine, idle: 4 seed items took 93 s with 2 threads and 139 s
    with 1 (llama-cpp-python's own default is half the CPUs). On a machine busy with other work,
    fewer threads are better: llama.cpp's threads spin at barriers and one descheduled thread
    stalls the rest (32 tokens on 2 busy cores: 151 s with 2 threads, 22 s with 1), so set
    EVIDENCE_THREADS=1 there.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


@contextlib.contextmanager
def _weight_repacking(enabled: bool) -> Iterator[None]:
    """Turn llama.cpp's "extra buffer types" (weight repacking, AMX) on or off while loading.

    Why off by default: a -march=native build on a virtual machine whose CPU flags advertise AMX
    died with SIGILL in the AMX kernels on the first token (seen on the 2-core build machine);
    without repacking the same build runs. EVIDENCE_LLAMA_REPACK=1 turns it back on. The Llama
    class exposes no switch for this, so the default-params factory is wrapped for the load.
    """
    import llama_cpp
    import llama_cpp.llama as module

    original = llama_cpp.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = enabled
        return p

    module.llama_cpp.llama_model_default_params = params  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.llama_cpp.llama_model_default_params = original  # type: ignore[attr-defined]


class LocalBackend:
    """In-process llama.cpp; `path` None means the embedded Qwen2.5-Coder-1.5B model."""

    name = "local"

    def __init__(self, path: str | None = None, *, settings: LabelSettings | None = None) -> None:
        self.settings = settings or LabelSettings()
        if path is None:
            self.path = str(embedded.ensure())
            self.model = embedded.MODEL_NAME
        else:
            self.path = str(Path(path).expanduser())
            self.model = Path(self.path).stem
        self.llm = load(self.path, seed=self.settings.seed)

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *,
                 max_tokens: int) -> Completion:
        """Messages + JSON schema → one grammar-constrained completion."""
        with _LOCK:
            out = self.llm.create_chat_completion(
                messages=messages, temperature=0.0, seed=self.settings.seed, max_tokens=max_tokens,
                response_format={"type": "json_object", "schema": schema})
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(text=choice["message"].get("content"),
                          tokens_in=usage.get("prompt_tokens", 0),
                          tokens_out=usage.get("completion_tokens", 0),
                          finish_reason=choice.get("finish_reason"))

    def label(self, request: LabelRequest, record: Record) -> Label:
        """Request → Label, re-asking with the validation error on invalid or ungrounded answers."""
        return reask_loop(
            lambda msgs: self.complete(msgs, request.schema, max_tokens=request.max_tokens),
            request, record, backend=self.name, model=self.model)
