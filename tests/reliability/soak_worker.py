"""A worker process of the soak test: ``python soak_worker.py ROLE CONFIG_JSON``.

Roles, on the store ``config["url"]`` and namespace ``config["namespace"]``, with the
threading API, until the file ``config["stop"]`` exists:

- ``holder`` — takes the mutexes ``config["names"]`` (ttl ``config["ttl"]``) one after
  the other, and in each hold writes twice to the shared fenced resource
  ``config["fence"]`` with the hold's token. Logs ``acquired`` (name, token, start) right
  after ``acquire`` returns and ``hold`` (… end, lost, the two writes' outcomes) after
  ``release``; ``lost`` means ``release()`` raised ``LockLostError``; ``on_lost`` (name,
  token) when the mutex's ``on_lost`` callback runs.
- ``scheduler`` — runs a one-shot scheduler (callback: logs ``fired``, works
  ``props["work"]`` seconds, logs ``finished``) and the recurring job ``soak-tick``
  (logs ``run_start``/``run_end``).

Events are JSON lines (``tests/processes/worker.py``'s ``Reporter``: ``t`` is
``time.monotonic()``, shared by all processes of the host). A watchdog ends the worker if
the test process dies.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import logging
import os
import random
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clustersync as cs  # noqa: E402
from clustersync.testing.checker import SharedFencedResource  # noqa: E402
from tests.processes.worker import Reporter, start_watchdog  # noqa: E402

#: How long a (re)started worker keeps trying to reach a store that is restarting.
OPEN_PATIENCE = 60.0


def open_store(cfg: dict[str, Any]) -> cs.Store:
    deadline = time.monotonic() + OPEN_PATIENCE
    while True:
        try:
            return cs.open_store(cfg["url"], namespace=cfg["namespace"])
        except cs.StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def holder(store: cs.Store, cfg: dict[str, Any], report: Reporter) -> None:
    me = cfg["name"]
    stop = Path(cfg["stop"])
    rng = random.Random(os.getpid())
    fence = SharedFencedResource(cfg["fence"])
    mutexes: dict[str, cs.Mutex] = {}

    def told(name: str) -> None:
        report("on_lost", name=name, token=mutexes[name].token, t_lost=time.monotonic())

    for name in cfg["names"]:
        mutexes[name] = cs.Mutex(store, name, ttl=cfg["ttl"], on_lost=functools.partial(told, name))
    report("ready")
    while not stop.exists():
        name = rng.choice(cfg["names"])
        mutex = mutexes[name]
        try:
            if not mutex.acquire(timeout=5):
                continue
        except cs.StoreUnavailableError:
            time.sleep(0.05)
            continue
        start = time.monotonic()
        token = mutex.token
        assert token is not None
        report("acquired", name=name, token=token, start=start)
        first = fence.write(token, name=name, holder=me)
        time.sleep(rng.uniform(0, cfg["hold"]))
        second = fence.write(token, name=name, holder=me)
        end = time.monotonic()
        try:
            mutex.release()
            lost = False
        except cs.LockLostError:
            lost = True
        report("hold", name=name, token=token, start=start, end=end, lost=lost, w=[first, second])
    fence.close()


def scheduler(store: cs.Store, cfg: dict[str, Any], report: Reporter) -> None:
    def fire(key: str, props: Any) -> None:
        report("fired", key=key, start=time.monotonic())
        time.sleep(props["work"])
        report("finished", key=key)

    def tick() -> None:
        start = time.monotonic()
        report("run_start", start=start)
        time.sleep(cfg["work"])
        report("run", start=start, end=time.monotonic())

    jobs = cs.get_job_once_scheduler(store, claim_ttl=cfg["claim_ttl"])
    jobs.set_callback(fire)
    deadline = time.monotonic() + OPEN_PATIENCE
    while True:
        try:
            jobs.start()
            break
        except cs.StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    recurring = cs.schedule(
        store,
        "soak-tick",
        cs.wait_for_interval(timedelta(seconds=cfg["interval"])),
        tick,
        ttl=cfg["job_ttl"],
    )
    report("ready")
    stop = Path(cfg["stop"])
    while not stop.exists():
        time.sleep(0.02)
    report("stopping")
    closed = recurring.close(timeout=60)
    stopped = jobs.stop(timeout=60)
    report("stopped", closed=closed, stopped=stopped)


ROLES = {"holder": holder, "scheduler": scheduler}


def main(argv: list[str]) -> int:
    role, raw = argv[1], argv[2]
    cfg: dict[str, Any] = json.loads(raw)
    start_watchdog(cfg.get("lifetime", 3600))
    logging.basicConfig(
        level=logging.ERROR,
        stream=sys.stderr,
        format=f"%(asctime)s [{cfg['name']} {os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on demand (stderr)
    report = Reporter(cfg["log"])
    report("started", role=role)
    with open_store(cfg) as store:
        ROLES[role](store, cfg, report)
    report("exit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
