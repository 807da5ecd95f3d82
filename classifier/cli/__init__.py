"""The `evidence` command: the only place that prints or exits.

Verbs follow the stages. Each group of verbs lives in its own module here and registers itself
on `main`; shared options (`--db`, `--feeds`, `--theses`, `--json`, `--quiet`) come from
`classifier.cli.common`. Errors from `classifier.errors` become one-line messages and exit 1.
"""

from __future__ import annotations

import sys

import click

from classifier import __version__
from classifier.errors import EvidenceError


class Main(click.Group):
    """Click group that turns our errors into a clean message and exit status 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except EvidenceError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)


@click.group(cls=Main)
@click.version_option(__version__, prog_name="evidence")
def main() -> None:
    """Evidence desk: news feeds in, editor-reviewed evidence for forecasts out.

    Stages: fetch → extract → dedupe → route → label → review → ledger.
    """


def _register() -> None:
    # Each module adds its commands to `main` at import time.
    from classifier.cli import ingest  # noqa: F401
    from classifier.cli import review  # noqa: F401
    from classifier.cli import demo  # noqa: F401
    from classifier.cli import workercmd  # noqa: F401
    from classifier.cli import routecmd  # noqa: F401
    from classifier.cli import ledgercmd  # noqa: F401
    from classifier.cli import evalcmd  # noqa: F401
    from classifier.cli import labelcmd  # noqa: F401
    from classifier.cli import modelcmd  # noqa: F401  (after labelcmd: adds to its `model` group)
    from classifier.cli import versioncmd  # noqa: F401  (model combine / list / use)


_register()
