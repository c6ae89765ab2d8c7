"""gunicorn's settings for the project, read from the working directory:
``gunicorn mysite.wsgi --workers 4 [--preload]``.

Every worker starts the background work once it has loaded the project, after the fork;
the master never does. With ``--preload`` the master imports the project -- and runs
``AppConfig.ready()`` -- before forking the workers: work started there would run in the
master, and a fork while one of its callbacks runs copies the locks that callback holds
(an import lock, a connection pool's lock) into the worker, where nothing ever releases
them. The worker's copy of the job can then hang for good, holding the job's lease.
"""

from typing import Any

# AppConfig.ready() starts nothing under gunicorn (see mysite/settings.py) ...
raw_env = ["CLUSTERSYNC_BACKGROUND_WORK=0"]


def post_worker_init(worker: Any) -> None:
    """... each worker starts it once it has loaded the project (with or without
    ``--preload``)."""
    from reminders import jobs

    jobs.start()
