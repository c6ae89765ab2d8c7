"""The tasks. ``send_digest`` is the periodic one: ``beat.py`` enqueues it once per period
for the whole cluster."""

import json
import os
import time
from typing import Any

from .celery import app


def record(event: str, **fields: Any) -> None:
    """Append an event to ``EVENT_LOG`` (one JSON line) if set; the tests read it."""
    if path := os.environ.get("EVENT_LOG"):
        line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
        with open(path, "a", encoding="utf-8") as events:
            events.write(line + "\n")


@app.task
def send_digest(period: str) -> None:
    """Send the digest of ``period`` (an ISO time: the start of the period). The period
    makes the task idempotent if you want it to be: skip a period already sent."""
    record("digest", period=period)
