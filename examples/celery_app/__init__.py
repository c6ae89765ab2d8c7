"""Celery + clustersync: periodic tasks without a ``celery beat`` singleton.

``celery -A celery_app worker`` finds the app here; importing ``beat`` connects the
signal handlers that run the schedule in every worker process (see ``beat.py``).
"""

from . import beat
from .celery import app

__all__ = ["app", "beat"]
