"""Django integration: add ``"clustersync.contrib.django"`` to ``INSTALLED_APPS``.

Settings (all optional):

- ``CLUSTERSYNC_URL`` -- the store every process of the project shares (default:
  ``$CLUSTERSYNC_URL``, else ``sqlite:///clustersync.db``);
- ``CLUSTERSYNC_NAMESPACE`` -- the namespace inside the store (default ``"default"``);
- ``CLUSTERSYNC_OPTIONS`` -- keyword options of :func:`clustersync.open_store`;
- ``CLUSTERSYNC_BACKGROUND_WORK`` -- ``True`` or ``False`` overrides what
  :func:`runs_background_work` detects.

It provides :func:`get_store` (the store of this process), :func:`runs_background_work`
(whether this process should start recurring jobs and the one-shot scheduler, for
``AppConfig.ready()``) and the ``manage.py clustersync`` command (the ``clustersync``
command line on the project's store: ``locks``, ``jobs list``, ...).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings

import clustersync

__all__ = ["get_store", "management_command", "runs_background_work", "store_settings"]

#: The names under which Django's command-line utility runs.
_MANAGEMENT_SCRIPTS = frozenset({"manage.py", "django-admin", "django-admin.py"})


class _ProcessStore:
    """The store of this process, opened at first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: clustersync.Store | None = None

    def get(self) -> clustersync.Store:
        with self._lock:
            if self._store is None or self._store.closed:
                url, namespace = store_settings()
                options: dict[str, Any] = dict(getattr(settings, "CLUSTERSYNC_OPTIONS", None) or {})
                self._store = clustersync.open_store(url, namespace=namespace, **options)
                atexit.register(self._store.close)
            return self._store


_process_store = _ProcessStore()


def store_settings() -> tuple[str | None, str]:
    """``(CLUSTERSYNC_URL, CLUSTERSYNC_NAMESPACE)`` from the settings; ``None`` for the URL
    means what :func:`clustersync.open_store` does without one."""
    url: str | None = getattr(settings, "CLUSTERSYNC_URL", None)
    namespace: str = getattr(settings, "CLUSTERSYNC_NAMESPACE", None) or "default"
    return url or None, namespace


def get_store() -> clustersync.Store:
    """The store of this process, opened from the settings at the first call (thread-safe)
    and closed when the process exits, which stops everything started on it.

    Opened before a fork (``gunicorn --preload`` imports the project in the master), it
    keeps working in every forked worker, as clustersync's threading API does.
    """
    return _process_store.get()


def management_command(argv: Sequence[str] | None = None) -> str | None:
    """The management command this process runs (``"migrate"``, ``"runserver"``, ...), or
    ``None`` if it is not ``manage.py``/``django-admin``/``python -m django``."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return None
    program = Path(argv[0])
    if program.name not in _MANAGEMENT_SCRIPTS and program.parts[-2:] != ("django", "__main__.py"):
        return None
    return argv[1] if len(argv) > 1 else "help"


def runs_background_work(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether this process should start recurring jobs and the one-shot scheduler.

    - ``True`` in a process that serves the project: a WSGI or ASGI server (gunicorn,
      uWSGI, uvicorn, daphne, ...) or any program other than ``manage.py`` that sets
      Django up;
    - ``False`` in management commands (``migrate``, ``shell``, ``test``,
      ``clustersync``, ...): they would otherwise take part in the cluster's work while
      they run, and a short-lived process may even be the one that starts a job;
    - for ``runserver``, ``True`` only in the process that serves: with the autoreloader
      (the default), Django starts ``runserver`` again as a child process with
      ``RUN_MAIN=true`` and the parent only watches files; with ``--noreload`` the
      process serves itself.

    The setting ``CLUSTERSYNC_BACKGROUND_WORK`` (``True``/``False``) overrides the
    detection, e.g. ``False`` in test settings or in Celery workers of the project.
    """
    forced = getattr(settings, "CLUSTERSYNC_BACKGROUND_WORK", None)
    if forced is not None:
        return bool(forced)
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    command = management_command(argv)
    if command is None:
        return True
    if command == "runserver":
        return environ.get("RUN_MAIN") == "true" or "--noreload" in argv
    return False
