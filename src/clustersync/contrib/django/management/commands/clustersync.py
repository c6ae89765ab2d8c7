"""``manage.py clustersync ...``: the ``clustersync`` command line on the project's store.

::

    python manage.py clustersync locks
    python manage.py clustersync jobs list --json
    python manage.py clustersync jobs schedule remind:42 --in 2h --props '{"user": 42}'
    python manage.py clustersync jobs cancel remind:42

The arguments are those of the ``clustersync`` command (``manage.py clustersync --help``);
``--url`` and ``--namespace`` default to the settings ``CLUSTERSYNC_URL`` and
``CLUSTERSYNC_NAMESPACE``. The exit status is the command line's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clustersync import cli
from clustersync.contrib.django import store_settings

#: Options that ``manage.py`` applies itself before running any command.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def cli_arguments(arguments: Sequence[str]) -> list[str]:
    """``arguments`` for :func:`clustersync.cli.main`, after ``--url``/``--namespace``
    from the settings (an explicit ``--url`` or ``--namespace`` given after the command
    still wins). ``demo`` keeps its own default store: a fresh one in a temporary folder."""
    url, namespace = store_settings()
    if arguments[:1] == ["demo"]:
        return list(arguments)
    defaults = ["--namespace", namespace]
    if url is not None:
        defaults = ["--url", url, *defaults]
    return defaults + list(arguments)


def without_django_options(arguments: Sequence[str]) -> list[str]:
    """``arguments`` without ``--settings``/``--pythonpath`` (and their values)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in _DJANGO_OPTIONS:
            skip = True
        elif not argument.startswith(tuple(option + "=" for option in _DJANGO_OPTIONS)):
            kept.append(argument)
    return kept


class Command(BaseCommand):
    help = (
        "The clustersync command line on this project's store (CLUSTERSYNC_URL, "
        "CLUSTERSYNC_NAMESPACE): locks, jobs list/schedule/cancel. "
        "See 'manage.py clustersync --help'."
    )
    requires_system_checks = ()

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "arguments", nargs=argparse.REMAINDER, help="arguments of the clustersync command"
        )

    def run_from_argv(self, argv: list[str]) -> None:
        # Django's own parser would reject the command line's options (--json, --url, ...):
        # everything after "manage.py clustersync" goes to the command line as it is.
        status = cli.main(cli_arguments(without_django_options(argv[2:])))
        if status:
            sys.exit(status)

    def handle(self, *args: Any, **options: Any) -> None:
        # call_command("clustersync", "jobs", "list", "--json", stdout=...)
        out, err = cast(TextIO, self.stdout), cast(TextIO, self.stderr)  # write() and flush()
        with redirect_stdout(out), redirect_stderr(err):
            status = cli.main(cli_arguments(options["arguments"]))
        if status:
            raise CommandError(f"clustersync exited with status {status}", returncode=status)
