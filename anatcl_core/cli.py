"""`anatcl` command line: one subcommand per stage of the pipeline.

Each subcommand lives beside the code it drives: the module named below defines
`add_arguments(parser)` and `run(args)`, and is imported only when its command runs,
so `anatcl --help` stays fast.

A user's mistake (a bad flag or value, a missing or malformed file, a refused action) ends with one line on
stderr, `anatcl <command>: <what was found and what is expected>`, and exit status 1. `anatcl --debug ...` (or
ANATCL_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

COMMANDS = {
    "synth": ("anatcl_core.data.synthetic", "generate the synthetic default cohorts"),
    "import": ("anatcl_core.data.importers", "convert a real dataset to the cohort layout"),
    "pretrain": ("anatcl_core.pretrain", "pretrain an encoder with one of the six methods"),
    "embed": ("anatcl_core.embed", "extract encoder features (512-d for the paper's ResNet-18) for a cohort"),
    "probe": ("anatcl_core.evaluation", "cross-validated linear probes on the paper's downstream tasks"),
    "book": ("anatcl_core.book", "execute the chapters and render the book"),
}


# What a user can cause: refusals and validation (ValueError, including CohortError, CheckpointError and
# RunFolderError), files (OSError), a diverged run (FloatingPointError). Anything else is a bug: traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line and exit status 1, like every other user error."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int):
    """An argparse `type` for integers >= minimum, so a range mistake is caught before any work starts."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def path_argument(text: str) -> Path:
    """An argparse `type` for paths: an empty string is refused (Path("") would quietly mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return Path(text)


def one_line(err: BaseException) -> str:
    """The error's message on one line; for a file error, the file first."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split()) or type(err).__name__


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The `anatcl` parser; only the subcommand named in `argv` imports its module and gets its options."""
    parser = OneLineParser(prog="anatcl", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return guarded(f"anatcl {args.command}", args._run, args, args.debug)


def guarded(prog: str, run, args: argparse.Namespace, debug: bool = False) -> int:
    """`run(args)`, with a user error reported as one line (see the module docstring) and exit status 1."""
    try:
        status = int(run(args) or 0)
        if sys.stdout is not None:             # None when started with stdout closed (>&-)
            sys.stdout.flush()                 # here, where a closed pipe is caught, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader of stdout left (`anatcl ... | head`): stop quietly, as other command-line tools do, and keep
        # Python's last flush at exit from failing on the closed pipe too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as err:
        if debug or os.environ.get("ANATCL_DEBUG"):
            raise
        print(f"{prog}: {one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
