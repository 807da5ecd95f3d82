"""Stage 1–3 verbs: fetch, feeds, articles, show, run, demo."""

from __future__ import annotations

from classifier.cli import main  # noqa: F401  (commands register on it)
