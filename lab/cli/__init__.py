"""``python -m lab COMMAND``: the lab's one command line.

Students' commands (:mod:`lab.cli.students`): evaluate, prune, goodnet,
fine-prune, detect, classify. Instructors' commands
(:mod:`lab.cli.instructors`): make-default, make-badnet, make-challenge,
grade, and the programs notebooks, student and bench (the modules
:mod:`lab.course.notebooks`, :mod:`lab.course.student`, :mod:`lab.course.bench`).
``python -m lab --help`` lists them in these two groups.

Every command prints one line ``error: <file>: expected ..., found ...`` and
exits with status 2 on bad input, instead of a TensorFlow trace. (The
``badnet-lab`` script that ``pip install`` puts on the PATH is this same
command line.)
"""

from __future__ import annotations

import argparse
import sys

GROUPS = ("students", "instructors")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m lab``, commands grouped for students and instructors in ``--help``."""
    from lab.cli import arguments, instructors, students

    parser = arguments.OneLineParser(prog="python -m lab", description="BadNet Pruning Lab command line.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = []
    for group, module in zip(GROUPS, (students, instructors)):
        before = len(commands._choices_actions)  # argparse keeps (name, help) of each command here
        module.register(commands)
        added = commands._choices_actions[before:]
        listing.append(f"{group}:\n" + "\n".join(f"  {action.dest:<16}{action.help}" for action in added))
    commands._choices_actions.clear()  # listed once, grouped, in the epilog instead of argparse's flat list
    parser.epilog = "\n\n".join(listing) + "\n\n`python -m lab COMMAND --help` explains a command."
    return parser


def main(argv: list[str] | None = None) -> int:
    from lab.cli.arguments import print_error
    from lab.cli.instructors import FORWARDED, run_forwarded
    from lab.errors import LabError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            if argv and argv[0] in FORWARDED:  # a whole program: its own options, its own --help
                return run_forwarded(argv[0], argv[1:])
            args = build_parser().parse_args(argv)
        except SystemExit as stop:  # --help, or a bad argument already reported in one line: the status
            if stop.code is None or isinstance(stop.code, int):
                return stop.code or 0
            print(stop.code, file=sys.stderr)  # what Python itself does with sys.exit("message")
            return 1
        return args.handler(args)
    except LabError as error:
        print_error(str(error))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
