"""Settings of the clustersync Django example (everything else is Django's default).

Environment: ``CLUSTERSYNC_URL`` (the store every process shares), ``CLUSTERSYNC_NAMESPACE``,
``DJANGO_DB`` (the SQLite database), ``CLEANUP_INTERVAL_SECONDS`` (the recurring job's
interval, default 3600), ``EVENT_LOG`` (a file where the background work appends one JSON
line per event; the tests read it).
"""

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-clustersync-example")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.sessions",
    "clustersync.contrib.django",  # manage.py clustersync ...
    "reminders",
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", BASE_DIR / "db.sqlite3"),
    }
}
USE_TZ = True

# -- clustersync ------------------------------------------------------------------------------
# Every process of the project (every gunicorn worker, on every host) must use the same
# store and namespace: a SQLite file for the processes of one host, Redis or PostgreSQL
# (redis://..., postgresql://...) when the project runs on several hosts.
CLUSTERSYNC_URL = os.environ.get("CLUSTERSYNC_URL", f"sqlite:///{BASE_DIR / 'clustersync.db'}")
CLUSTERSYNC_NAMESPACE = os.environ.get("CLUSTERSYNC_NAMESPACE", "django-example")
# Whether AppConfig.ready() starts the background work (reminders/apps.py): None detects
# it (serving processes yes, management commands no); "0"/"1" in the environment decide
# per kind of process (gunicorn.conf.py sets "0": gunicorn workers start it themselves).
CLUSTERSYNC_BACKGROUND_WORK = {"0": False, "1": True}.get(
    os.environ.get("CLUSTERSYNC_BACKGROUND_WORK", "")
)

CLEANUP_INTERVAL = timedelta(seconds=float(os.environ.get("CLEANUP_INTERVAL_SECONDS", "3600")))
EVENT_LOG = os.environ.get("EVENT_LOG")
