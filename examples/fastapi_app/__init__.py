"""FastAPI + clustersync: background work that runs once per cluster, not once per worker
(see ``main.py`` and docs/guide/fastapi.md)."""
