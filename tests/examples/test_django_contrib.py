"""clustersync.contrib.django in this process: which processes start background work,
and how ``manage.py clustersync`` builds the command line's arguments."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("django")

from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from clustersync.contrib.django import management_command, runs_background_work
from clustersync.contrib.django.management.commands.clustersync import (
    cli_arguments,
    without_django_options,
)


@pytest.fixture(autouse=True, scope="module")
def django_settings() -> None:
    if not settings.configured:
        settings.configure(INSTALLED_APPS=["clustersync.contrib.django"])
        import django

        django.setup()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["manage.py", "migrate"], "migrate"),
        (["/srv/mysite/manage.py", "runserver", "0:8000"], "runserver"),
        (["/venv/bin/django-admin", "shell"], "shell"),
        (["/usr/lib/python3/site-packages/django/__main__.py", "check"], "check"),
        (["manage.py"], "help"),
        (["/venv/bin/gunicorn", "mysite.wsgi"], None),
        (["/venv/lib/python3.11/site-packages/gunicorn/__main__.py"], None),
        ([], None),
    ],
)
def test_management_command(argv: list[str], command: str | None) -> None:
    assert management_command(argv) == command


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["/venv/bin/gunicorn", "mysite.wsgi"], {}, True),
        (["/venv/bin/uvicorn", "mysite.asgi:application"], {}, True),
        (["manage.py", "runserver"], {}, False),  # the autoreloader's parent
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),  # its child
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "shell"], {"RUN_MAIN": "true"}, False),
        (["manage.py", "clustersync", "locks"], {}, False),
    ],
)
def test_runs_background_work(argv: list[str], environ: dict[str, str], expected: bool) -> None:
    assert runs_background_work(argv, environ) is expected


@pytest.mark.parametrize("forced", [True, False])
def test_the_setting_overrides_the_detection(forced: bool) -> None:
    with override_settings(CLUSTERSYNC_BACKGROUND_WORK=forced):
        assert runs_background_work(["manage.py", "migrate"], {}) is forced
        assert runs_background_work(["/venv/bin/gunicorn"], {}) is forced


def test_cli_arguments_default_to_the_settings() -> None:
    with override_settings(CLUSTERSYNC_URL="redis://r:6379/0", CLUSTERSYNC_NAMESPACE="site"):
        assert cli_arguments(["locks"]) == [
            "--url", "redis://r:6379/0", "--namespace", "site", "locks",
        ]  # fmt: skip
        # The demo keeps its own fresh store.
        assert cli_arguments(["demo", "--workers", "2"]) == ["demo", "--workers", "2"]
    with override_settings(CLUSTERSYNC_URL=None, CLUSTERSYNC_NAMESPACE=None):
        assert cli_arguments(["jobs", "list"]) == ["--namespace", "default", "jobs", "list"]


def test_django_options_are_not_passed_on() -> None:
    arguments = ["--settings", "a.b", "jobs", "--pythonpath=/x", "list", "--json"]
    assert without_django_options(arguments) == ["jobs", "list", "--json"]


def test_call_command_writes_to_the_given_streams(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    out, err = io.StringIO(), io.StringIO()
    with override_settings(CLUSTERSYNC_URL=url, CLUSTERSYNC_NAMESPACE="site"):
        call_command("clustersync", "jobs", "schedule", "k", "--in", "1h", stdout=out)
        call_command("clustersync", "jobs", "list", "--json", stdout=out)
        with pytest.raises(CommandError, match="status 1") as raised:
            call_command("clustersync", "jobs", "cancel", "nope", stdout=out, stderr=err)
    assert "scheduled one-shot job 'k'" in out.getvalue()
    assert '"key": "k"' in out.getvalue()
    assert "one-shot job with key 'nope'" in err.getvalue()
    assert raised.value.returncode == 1
