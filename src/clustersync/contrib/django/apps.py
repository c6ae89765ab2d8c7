"""The Django app ``clustersync.contrib.django`` (label ``clustersync``)."""

from __future__ import annotations

from django.apps import AppConfig


class ClusterSyncConfig(AppConfig):
    """Provides the ``manage.py clustersync`` command; has no models."""

    name = "clustersync.contrib.django"
    label = "clustersync"
    verbose_name = "clustersync"
