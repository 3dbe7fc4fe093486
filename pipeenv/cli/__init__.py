"""The ``pipeenv`` command: parse, call the library, print. Nothing is computed here.

Each subcommand lives in its own module of this package, exposing ``register(subparsers)`` that
adds its parser with ``set_defaults(run=...)``; ``run(args) -> int`` returns the exit code.
A :class:`~pipeenv.errors.PipeenvError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeenv.errors import PipeenvError

__all__ = ["main"]

# Modules of this package that define subcommands, in the order `pipeenv --help` lists them.
_COMMAND_MODULES = (
    "simulate",
    "clusters",
    "zoo",
    "profile",
    "importers",
    "pipedream",
    "agents",
    "train",
    "validate",
    "bench",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pipeenv: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full ``pipeenv`` argument parser."""
    parser = _Parser(prog="pipeenv", description="Pipeline-parallel partitioning as an RL problem.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"pipeenv.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeenv`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except PipeenvError as exc:
        sys.stderr.write(f"pipeenv {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("pipeenv: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
