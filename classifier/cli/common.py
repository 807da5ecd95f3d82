"""Options and the lazily built environment (settings, engine, feeds, theses) shared by verbs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy import Engine

from classifier.config import FeedsFile, Settings, ThesesFile, load_feeds, load_settings, load_theses
from classifier.store import connect, migrate


@dataclass
class Env:
    """What a command needs, built on first use; the database is migrated on first connect."""

    db: str | None = None
    config: str | None = None
    feeds_path: str = "feeds.toml"
    theses_path: str = "theses.toml"
    quiet: bool = False
    as_json: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, db_url=self.db)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = connect(self.settings.db_url)
            migrate(self._engine)
        return self._engine

    @functools.cached_property
    def feeds(self) -> FeedsFile:
        return load_feeds(self.feeds_path) if Path(self.feeds_path).exists() else FeedsFile()

    @functools.cached_property
    def theses(self) -> ThesesFile:
        return load_theses(self.theses_path)

    @functools.cached_property
    def console(self) -> Console:
        return Console(stderr=True, quiet=self.quiet)

    def emit(self, rows: Any) -> None:
        """Print JSON (for --json) to stdout; pretty output is the caller's job."""
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))


MODEL_HELP = ("Labeler: combined (default: the encoder + the LLM from --llm, per field), local, "
              "local:PATH.gguf, openai:MODEL, encoder, encoder:DIR, scripted.")
LLM_HELP = ("The combined labeler's LLM: local, local:PATH.gguf, openai:MODEL (default: env "
            "EVIDENCE_MODEL, [label] llm_model, else local, or openai with OPENAI_API_KEY / "
            "OPENAI_BASE_URL set).")


def labeler_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: --model SPEC and --llm SPEC, passed as `model_spec` and `llm_spec`."""
    f = click.option("--llm", "llm_spec", metavar="SPEC", help=LLM_HELP)(f)
    return click.option("--model", "model_spec", metavar="SPEC", help=MODEL_HELP)(f)


def make_backend(settings: Any, model_spec: str | None, llm_spec: str | None,
                 engine: Engine | None = None) -> Any:
    """Label settings + --model/--llm (+ the desk's database, for its active encoder version)
    → a ready backend."""
    from classifier.backends import get_backend
    encoder = None
    if engine is not None and settings.encoder is None:
        from classifier.encoder.versions import active_folder
        encoder = active_folder(engine)
    return get_backend(model_spec, settings, llm=llm_spec, encoder=encoder)


def env_options(*, listing: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add --db/--config/--feeds/--theses/--quiet (and --json) and pass `env: Env`."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, db: str | None, config: str | None, feeds: str, theses: str,
                    quiet: bool, **kwargs: Any) -> Any:
            as_json = kwargs.pop("as_json", False)
            env = Env(db=db, config=config, feeds_path=feeds, theses_path=theses, quiet=quiet,
                      as_json=as_json)
            return f(*args, env=env, **kwargs)

        opts = [
            click.option("--db", envvar="EVIDENCE_DB", metavar="URL",
                         help="Database URL (default sqlite:///evidence.db; env EVIDENCE_DB)."),
            click.option("--config", envvar="EVIDENCE_CONFIG", metavar="PATH",
                         help="Settings file (default ./evidence.toml if present)."),
            click.option("--feeds", default="feeds.toml", show_default=True, metavar="PATH",
                         help="Feeds file."),
            click.option("--theses", default="theses.toml", show_default=True, metavar="PATH",
                         help="Theses file."),
            click.option("--quiet", "-q", is_flag=True, help="No progress or summary (for cron)."),
        ]
        if listing:
            opts.append(click.option("--json", "as_json", is_flag=True, help="Output JSON."))
        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorate
