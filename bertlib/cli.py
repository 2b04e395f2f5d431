"""The ``bertlib`` console script: ``bertlib SUBCOMMAND [--config FILE.yaml] [--key value ...]``.

A click group whose subcommands live in the modules that do the work and are imported only when
called, so that ``bertlib --help``, ``bertlib squad-eval`` or a bad ``--config`` never pays for
importing TensorFlow. Each module's ``main(argv)`` parses its own command line, generated from its
pydantic schema (:mod:`bertlib.core.cli_schema`), so ``bertlib SUBCOMMAND --help`` lists every key with its
type, default and description. Every subcommand is also ``python -m <module>``. Bad input prints one
line to stderr and exits 2.
"""

from __future__ import annotations

import sys

import click

from bertlib.core.commands import COMMANDS, run_command
from bertlib.core.errors import print_error


class _LazyGroup(click.Group):
    """Subcommands resolved from :data:`COMMANDS`; a module is imported only when its command runs."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        doc = COMMANDS[name][1]

        def run(args=()):
            return run_command(name, args)

        # the module's own parser reads every argument, --help included
        return click.Command(
            name,
            help=doc,
            short_help=doc,
            callback=run,
            add_help_option=False,
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
            context_settings={"ignore_unknown_options": True},
        )

    def resolve_command(self, ctx, args):
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            raise click.UsageError(f"unknown subcommand {args[0]!r} (try: {', '.join(COMMANDS)})")
        return super().resolve_command(ctx, args)


CLI = _LazyGroup(
    "bertlib",
    help=__doc__.splitlines()[0].replace("``", "") + "\n\n`bertlib SUBCOMMAND --help` "
    "lists the subcommand's keys with type, default and description; each is also "
    "`python -m bertlib SUBCOMMAND`.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(CLI.main(argv, prog_name="bertlib", standalone_mode=False) or 0)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `bertlib`: the help, exit 2
        print(e.ctx.get_help())
        return 2
    except click.ClickException as e:
        print_error(e.format_message())
        return 2


if __name__ == "__main__":
    sys.exit(main())
