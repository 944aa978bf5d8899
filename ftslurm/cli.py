"""The `ftslurm` command: parses the command line and hands each subcommand to its module.

Each module in `ftslurm.commands` owns a few subcommands and exposes `register(subparsers)`; the
handler it sets with `set_defaults(handler=...)` returns the exit code. Errors of ftslurm's own
types are printed as one clear message (no traceback) with their exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ftslurm import __version__, exit_codes
from ftslurm.errors import FtslurmError, RunDirAccessError

#: Modules that register subcommands, in the order they appear in `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "ftslurm.commands.spec",
    "ftslurm.commands.chain",
    "ftslurm.commands.fleet",
    "ftslurm.commands.explain",
    "ftslurm.commands.report",
)

#: Subcommands whose whole command line is handed to another parser untouched.
PASSTHROUGH_COMMANDS: dict[str, str] = {
    "launch": "ftslurm.fault_tolerance.launcher:main",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ftslurm",
        description="Fault-tolerant, self-resuming PyTorch training runs on SLURM.",
    )
    parser.add_argument("--version", action="version", version=f"ftslurm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for name in PASSTHROUGH_COMMANDS:
        subparsers.add_parser(
            name,
            help="the fault-tolerant, torchrun-compatible launcher (see `ftslurm launch --help`)",
            add_help=False,
        )
    return parser


def _run_passthrough(name: str, argv: Sequence[str]) -> int:
    module_name, func_name = PASSTHROUGH_COMMANDS[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(list(argv)) or 0)


def _file_error(error: OSError) -> RunDirAccessError:
    """An OSError on one of the run's files as an error naming the file (exit code 3)."""
    where = f"{error.filename}: " if error.filename else ""
    return RunDirAccessError(f"cannot use {where}{error.strerror or error}",
                             hint="check the permissions of the run directory and its files")


def _report_error(error: FtslurmError) -> None:
    """Print an ftslurm error to stderr: one message, an optional hint, no traceback."""
    print(f"ftslurm: error: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ftslurm` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in PASSTHROUGH_COMMANDS:
            return _run_passthrough(args_list[0], args_list[1:])
        parser = build_parser()
        args = parser.parse_args(args_list)
        try:
            return int(args.handler(args) or 0)
        except OSError as error:  # a file of the run that cannot be read or written
            raise _file_error(error) from error
    except FtslurmError as error:
        _report_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        print("ftslurm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["build_parser", "exit_codes", "main"]
