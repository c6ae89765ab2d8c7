"""The Celery application.

The broker is kombu's SQLAlchemy transport on a SQLite file, which the worker processes
of one host share without a server (``pip install sqlalchemy``); use Redis or RabbitMQ in
production (``CELERY_BROKER_URL``).
"""

import os

from celery import Celery

app = Celery("celery_app", include=["celery_app.tasks"])
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "sqla+sqlite:///celery-broker.db"),
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
