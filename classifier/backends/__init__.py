"""Labeling backends behind one seam (`base.Backend`): combined (default), local, openai,
encoder, scripted.

    get_backend("combined")                  the encoder + an LLM, combined per field (default)
    get_backend("local")                     embedded Qwen2.5-Coder-1.5B GGUF, in-process
    get_backend("local:/path/model.gguf")    any GGUF file
    get_backend("openai:gpt-4o-mini")        OpenAI, or any OpenAI-compatible server via OPENAI_BASE_URL
    get_backend("gpt-4o-mini")               the same, when OPENAI_API_KEY or OPENAI_BASE_URL is set
    get_backend("scripted")                  queued answers (tests, demos of the plumbing)
    get_backend("encoder")                   the trained evidence encoder shipped in the package
    get_backend("encoder:/path/model-dir")   any model folder `evidence model train` wrote

With no spec: [label] backend, else "combined". The combined labeler's LLM part: --llm, else
$EVIDENCE_MODEL, else [label] llm_model, else "openai:<default>" when OPENAI_API_KEY or
OPENAI_BASE_URL is set, else "local". ($EVIDENCE_MODEL naming "encoder..." or "combined" selects
the labeler itself.) Only `openai_compat` imports openai/instructor; only `local` imports
llama_cpp; only `encoder` and `combined` (through classifier/encoder/) run the trained encoder.
"""

from __future__ import annotations

import os

from classifier.backends.base import Backend, CallRecord, LabelRequest
from classifier.backends.scripted import ScriptedBackend
from classifier.config import LabelSettings
from classifier.errors import BackendUnavailable, ConfigError

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

__all__ = ["Backend", "CallRecord", "LabelRequest", "ScriptedBackend", "get_backend",
           "resolve_llm", "resolve_spec"]


def _labeler_env() -> str | None:
    env = os.environ.get("EVIDENCE_MODEL")
    return env if env and (env == "combined" or env.split(":")[0] == "encoder") else None


def resolve_spec(spec: str | None, settings: LabelSettings | None = None) -> str:
    """--model value (or None) → a full spec "combined" | "local[:path]" | "openai:<model>" |
    "encoder[:dir]" | "scripted"."""
    settings = settings or LabelSettings()
    spec = spec or _labeler_env() or settings.backend or "combined"
    return _full(spec)


def resolve_llm(llm: str | None, settings: LabelSettings | None = None) -> str:
    """--llm value (or None) → the combined labeler's LLM part as a full spec (never combined)."""
    settings = settings or LabelSettings()
    spec = llm or (None if _labeler_env() else os.environ.get("EVIDENCE_MODEL")) \
        or settings.llm_model
    remote = bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))
    if not spec:
        return f"openai:{DEFAULT_OPENAI_MODEL}" if remote else "local"
    full = _full(spec)
    if full == "combined" or full.startswith("encoder"):
        raise ConfigError(f"--llm {spec}: the combined labeler's LLM part must be an LLM "
                          f"(local, local:PATH, openai:MODEL or scripted)")
    return full


def _full(spec: str) -> str:
    if spec in ("local", "scripted", "encoder", "combined") or spec.startswith(
            ("local:", "openai:", "encoder:")):
        return spec
    if spec == "openai":
        return f"openai:{DEFAULT_OPENAI_MODEL}"
    if spec.endswith(".gguf"):
        return f"local:{spec}"
    return f"openai:{spec}"


def get_backend(spec: str | None = None, settings: LabelSettings | None = None, *,
                llm: str | Backend | None = None, encoder: str | None = None) -> Backend:
    """Backend spec (see module doc) + label settings → a ready backend (BackendUnavailable if not).

    For "combined": `llm` is the LLM part (a spec, or a backend already built); `encoder` the model
    folder (None: [label] encoder, else the shipped model). An LLM that cannot start makes the
    combined labeler label with the encoder alone, saying why on every label."""
    settings = settings or LabelSettings()
    full = resolve_spec(spec, settings)
    if full == "combined":
        from classifier.backends.combined import CombinedBackend
        folder = encoder or settings.encoder
        if settings.llm == "none":
            return CombinedBackend(None, settings=settings, encoder=folder)
        if llm is None or isinstance(llm, str):
            try:
                llm = get_backend(resolve_llm(llm, settings), settings)
            except BackendUnavailable as e:
                return CombinedBackend(None, settings=settings, encoder=folder, llm_down=str(e))
        return CombinedBackend(llm, settings=settings, encoder=folder)
    if full == "scripted":
        return ScriptedBackend()
    if full == "encoder" or full.startswith("encoder:"):
        from classifier.backends.encoder import EncoderBackend
        return EncoderBackend(full.removeprefix("encoder").removeprefix(":") or encoder
                              or settings.encoder, settings=settings)
    if full.startswith("openai:"):
        from classifier.backends.openai_compat import OpenAIBackend
        return OpenAIBackend(full.removeprefix("openai:"), settings=settings)
    from classifier.backends.local import LocalBackend
    path = full.removeprefix("local").removeprefix(":") or None
    return LocalBackend(path, settings=settings)
