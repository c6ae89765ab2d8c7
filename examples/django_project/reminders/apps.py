from django.apps import AppConfig

from clustersync.contrib.django import runs_background_work


class RemindersConfig(AppConfig):
    name = "reminders"

    def ready(self) -> None:
        # ready() runs in every process that sets Django up: each server process, but
        # also every management command and both processes of `runserver`. Only the
        # processes that serve start the work (under gunicorn, see gunicorn.conf.py).
        if runs_background_work():
            from . import jobs

            jobs.start()
