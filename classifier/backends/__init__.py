"""Labeling backends behind one seam (`base.Backend`): local (default), openai, scripted.

    get_backend("local")                     embedded Qwen2.5-Coder-1.5B GGUF, in-process
    get_backend("local:/path/model.gguf")    any GGUF file
    get_backend("openai:gpt-4o-mini")        OpenAI, or any OpenAI-compatible server via OPENAI_BASE_URL
    get_backend("gpt-4o-mini")               the same, when OPENAI_API_KEY or OPENAI_BASE_URL is set
    get_backend("scripted")                  queued answers (tests, demos of the plumbing)
    get_backend("encoder")                   the trained evidence encoder shipped in the package
    get_backend("encoder:/path/model-dir")   any model folder `evidence model train` wrote

With no spec: $EVIDENCE_MODEL, else "openai:<default>" when OPENAI_API_KEY or OPENAI_BASE_URL is
set, else "local". Only `openai_compat` imports openai/instructor; only `local` imports llama_cpp;
only `encoder` (through classifier/encoder/) runs the trained encoder.
"""

from __future__ import annotations

import os

from classifier.backends.base import Backend, CallRecord, LabelRequest
from classifier.backends.scripted import ScriptedBackend
from classifier.config import LabelSettings

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

__all__ = ["Backend", "CallRecord", "LabelRequest", "ScriptedBackend", "get_backend",
           "resolve_spec"]


def resolve_spec(spec: str | None, settings: LabelSettings | None = None) -> str:
    """--model value (or None) → a full spec "local[:path]" | "openai:<model>" | "encoder[:dir]"
    | "scripted"."""
    settings = settings or LabelSettings()
    spec = spec or os.environ.get("EVIDENCE_MODEL") or settings.backend
    remote = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))
    if not spec:
        return f"openai:{DEFAULT_OPENAI_MODEL}" if remote else "local"
    if spec in ("local", "scripted", "encoder") or spec.startswith(("local:", "openai:", "encoder:")):
        return spec
    if spec == "openai":
        return f"openai:{DEFAULT_OPENAI_MODEL}"
    if spec.endswith(".gguf"):
        return f"local:{spec}"
    return f"openai:{spec}"


def get_backend(spec: str | None = None, settings: LabelSettings | None = None) -> Backend:
    """Backend spec (see module doc) + label settings → a ready backend (BackendUnavailable if not)."""
    settings = settings or LabelSettings()
    full = resolve_spec(spec, settings)
    if full == "scripted":
        return ScriptedBackend()
    if full == "encoder" or full.startswith("encoder:"):
        from classifier.backends.encoder import EncoderBackend
        return EncoderBackend(full.removeprefix("encoder").removeprefix(":") or None,
                              settings=settings)
    if full.startswith("openai:"):
        from classifier.backends.openai_compat import OpenAIBackend
        return OpenAIBackend(full.removeprefix("openai:"), settings=settings)
    from classifier.backends.local import LocalBackend
    path = full.removeprefix("local").removeprefix(":") or None
    return LocalBackend(path, settings=settings)
