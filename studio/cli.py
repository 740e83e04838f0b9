"""The ``studio`` command: one subcommand per module in ``studio/commands`` (each defines ``register``)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from studio import commands
from studio.errors import StudioError, StudioNote


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line naming the command's help, like every other studio error
    (argparse prints the whole usage first, which for ``render`` is a screenful)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand found in ``studio.commands``."""
    parser = _Parser(prog="studio", description="Feature visualisation and attribution studio.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"studio.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _note
    try:
        return args.run(args) or 0
    except StudioError as error:
        print(f"studio: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("studio: interrupted", file=sys.stderr)
        return 130


def _note(message, category, *_args, **_kwargs) -> None:
    """Warnings as one line (``studio: note:`` for what the studio chose, such as an inferred input spec),
    not a file and line number."""
    print(f"studio: note: {message}" if issubclass(category, StudioNote) else f"studio: warning: {message}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
