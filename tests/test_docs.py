"""The docs check themselves: every CLI command has help and is shown in the README."""

import click
import pytest

from classifier.cli import main
from tests.conftest import ROOT


def _commands(group: click.Group, prefix: str = "evidence"):
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


COMMANDS = sorted(_commands(main), key=lambda c: c[0])


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_has_help(path, cmd):
    assert (cmd.help or cmd.short_help or "").strip(), f"{path} has no help text"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_in_readme(path, cmd):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert path in readme, f"README.md does not show `{path}`"
