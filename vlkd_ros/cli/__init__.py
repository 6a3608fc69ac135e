"""`vlkd` command line: thin glue over the library; each subcommand group lives in its own module."""
from __future__ import annotations

import argparse
import importlib
import sys

from vlkd_formats.errors import VlkdError

# Modules under vlkd_ros.cli that each expose `register(subparsers)` and `COMMANDS`, the subcommands it registers; a
# subcommand sets `func(args) -> int`. Registering imports what a module's flags come from (sim and training
# configs), so a command builds only its own module's parser: `vlkd serve` loads neither training nor sim.
COMMAND_MODULES = ("distill", "tools", "miniworld", "serve", "collect", "grasp")


class CLIError(VlkdError):
    """A user error: printed as one line, exit status 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the `vlkd` parser: with `command`, only the subcommands of the module that has it; otherwise (or for an
    unknown command, whose error lists them all) every subcommand."""
    parser = argparse.ArgumentParser(prog="vlkd", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [importlib.import_module(f"vlkd_ros.cli.{name}") for name in COMMAND_MODULES]
    for module in [m for m in modules if command in m.COMMANDS] or modules:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vlkd` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (VlkdError, ValueError, FileNotFoundError) as err:  # every library error, CLIError included
        print(f"vlkd {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlkd {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(err: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined with spaces); its type if it has none."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__
