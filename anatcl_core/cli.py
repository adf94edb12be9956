"""`anatcl` command line: one subcommand per stage of the pipeline.

Each subcommand lives beside the code it drives: the module named below defines
`add_arguments(parser)` and `run(args)`, and is imported only when its command runs,
so `anatcl --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "synth": ("anatcl_core.data.synthetic", "generate the synthetic default cohorts"),
    "import": ("anatcl_core.data.importers", "convert a real dataset to the cohort layout"),
    "pretrain": ("anatcl_core.pretrain", "pretrain an encoder with one of the six methods"),
    "embed": ("anatcl_core.embed", "extract encoder features (512-d for the paper's ResNet-18) for a cohort"),
    "probe": ("anatcl_core.probe", "cross-validated linear probes on the paper's downstream tasks"),
    "book": ("anatcl_core.book", "execute the chapters and render the book"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anatcl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
