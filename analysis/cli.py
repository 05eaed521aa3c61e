"""``pet-analyze SUBCOMMAND inputs... --out PREFIX``: the analyses of i-PI outputs.

Every subcommand writes PREFIX.png (the plot) and PREFIX.json (the numbers, with their units)
and prints a one-line summary; mistakes in the inputs give one line on stderr and exit status 2.
"""

import argparse
import sys

from pet.arguments import OneLineParser

from . import (angular_momentum, diffusion, dipole_acf, drift, gofr, ice, intact, orientation,
               orientation_correlation, spectrum, torque)
from .errors import AnalysisError
from .output import output_prefix, write_outputs

ANALYSES = [angular_momentum, torque, spectrum, orientation, gofr, orientation_correlation,
            diffusion, dipole_acf, drift, intact, ice]
"""Modules with NAME, HELP, EXAMPLE, add_arguments(parser) and run(args) -> (result, figure, summary)."""


def build_parser() -> argparse.ArgumentParser:
    examples = "\n".join(f"  {module.EXAMPLE}" for module in ANALYSES)
    parser = OneLineParser(
        prog="pet-analyze", description=__doc__.split("\n\n", 1)[1].strip(),
        epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for module in ANALYSES:
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                                  epilog="example:\n  " + module.EXAMPLE,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.add_argument("--out", default=module.NAME,
                         help=f"output prefix: PREFIX.png and PREFIX.json (default {module.NAME}); "
                              f"an existing folder (or one ending in /): FOLDER/{module.NAME}.png and .json")
        sub.set_defaults(analysis=module)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, its one line printed)
        return stop.code
    try:
        prefix = output_prefix(args.out, args.analysis.NAME)
        result, fig, summary = args.analysis.run(args)
        png, json_path = write_outputs(prefix, result, fig)
    except AnalysisError as error:
        print(f"pet-analyze {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(summary)
    print(f"wrote {png} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
