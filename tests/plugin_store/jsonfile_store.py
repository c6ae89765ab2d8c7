"""A store written outside clustersync: ``jsonfile:///path/to/state.json``.

A small but complete store of the clustersync store contract, kept here to prove that a
store defined in another package is found through the ``clustersync.stores`` entry-point
group and passes the contract suite (``clustersync.testing.contract``). The whole state
is one JSON file; every operation locks it (``flock``), reads it, changes it and writes
it back, so processes of one host can share it. It sends no change notifications (the
contract allows that: waiters also have deadlines).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from clustersync.exceptions import DuplicateJobError, StoreUnavailableError
from clustersync.stores import (
    AcquireResult,
    ChangeListener,
    ClaimedJob,
    JobMetadataRecord,
    LeaseInfo,
    NewJob,
    RecurringJobRecord,
    StoredJob,
    StoreKind,
    conflicting_job,
)
from clustersync.stores.options import reject_unknown

KIND = StoreKind(
    name="jsonfile",
    schemes=("jsonfile",),
    backend="jsonfile_store:open_backend",
    url_forms=("jsonfile:///path/to/state.json",),
    reach="host",
)

_US = 1_000_000


def open_backend(url: str, namespace: str, options: dict[str, Any]) -> JsonFileBackend:
    reject_unknown(options, "jsonfile")
    path = url.removeprefix("jsonfile://")
    if not path.startswith("/"):
        raise ValueError(f"jsonfile URLs name an absolute path: {url!r}")
    return JsonFileBackend(path, namespace)


class JsonFileBackend:
    capabilities: frozenset[str] = frozenset()

    def __init__(self, path: str, namespace: str) -> None:
        self._path = path
        self._ns = namespace
        self._closed = False

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The namespace's state, locked; written back when the block succeeds."""
        if self._closed:
            raise StoreUnavailableError("the jsonfile store is closed")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot open {self._path}: {exc}") from exc
        with os.fdopen(fd, "r+", encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            text = file.read()
            everything = json.loads(text) if text else {}
            state = everything.setdefault(self._ns, {"leases": {}, "meta": {}, "jobs": {}})
            yield state
            file.seek(0)
            file.truncate()
            json.dump(everything, file)

    def now_us(self) -> int:
        if self._closed:
            raise StoreUnavailableError("the jsonfile store is closed")
        return int(time.time() * _US)

    # -- leases ----------------------------------------------------------------------------

    @staticmethod
    def _owns(lease: list[Any] | None, owner: str, token: int, now: int) -> bool:
        return lease is not None and lease[0] == owner and lease[1] == token and lease[2] > now

    def acquire_lease(self, name: str, owner: str, ttl: float) -> AcquireResult:
        with self._state() as state:
            now = self.now_us()
            lease = state["leases"].get(name)
            if lease is not None and lease[0] is not None and lease[2] > now:
                if lease[0] == owner:  # a retry of this acquisition
                    lease[2] = now + int(ttl * _US)
                    return AcquireResult(True, token=lease[1])
                return AcquireResult(False, retry_after=(lease[2] - now) / _US)
            token = (lease[1] if lease is not None else 0) + 1
            state["leases"][name] = [owner, token, now + int(ttl * _US)]
        return AcquireResult(True, token=token)

    def renew_lease(self, name: str, owner: str, token: int, ttl: float) -> bool:
        with self._state() as state:
            now = self.now_us()
            lease = state["leases"].get(name)
            if not self._owns(lease, owner, token, now):
                return False
            lease[2] = now + int(ttl * _US)
            return True

    def release_lease(self, name: str, owner: str, token: int) -> bool:
        with self._state() as state:
            lease = state["leases"].get(name)
            if not self._owns(lease, owner, token, self.now_us()):
                return False
            lease[0], lease[2] = None, 0  # the token stays: it is the fencing counter
            return True

    def break_lease(self, name: str) -> bool:
        with self._state() as state:
            lease = state["leases"].get(name)
            if lease is None or lease[0] is None or lease[2] <= self.now_us():
                return False
            lease[0], lease[2] = None, 0
            return True

    def list_leases(self) -> list[LeaseInfo]:
        with self._state() as state:
            now = self.now_us()
            return [
                LeaseInfo(name, lease[0], lease[1], (lease[2] - now) / _US)
                for name, lease in sorted(state["leases"].items())
                if lease[0] is not None and lease[2] > now
            ]

    # -- recurring job metadata ------------------------------------------------------------

    @staticmethod
    def _job(state: dict[str, Any], key: str) -> dict[str, Any]:
        job: dict[str, Any] = state["meta"].setdefault(
            key,
            {
                "schedule": "",
                "paused": False,
                "triggered": False,
                "started": None,
                "finished": None,
                "outcome": None,
                "error": None,
                "instances": {},
            },
        )
        return job

    def get_job_metadata(self, key: str) -> JobMetadataRecord:
        with self._state() as state:
            job = state["meta"].get(key)
            if job is None:
                return JobMetadataRecord(None, self.now_us())
            return JobMetadataRecord(
                job["finished"], self.now_us(), job["paused"], job["triggered"]
            )

    def register_recurring_job(
        self, key: str, instance: str, schedule: str, next_run_us: int | None, ttl: float
    ) -> None:
        with self._state() as state:
            job = self._job(state, key)
            job["schedule"] = schedule
            job["instances"][instance] = [next_run_us, self.now_us() + int(ttl * _US)]

    def unregister_recurring_job(self, key: str, instance: str) -> None:
        with self._state() as state:
            job = state["meta"].get(key)
            if job is not None:
                job["instances"].pop(instance, None)

    def start_job_run(self, key: str, lease_name: str, owner: str, token: int) -> bool:
        with self._state() as state:
            now = self.now_us()
            if not self._owns(state["leases"].get(lease_name), owner, token, now):
                return False
            job = self._job(state, key)
            if job["paused"] and not job["triggered"]:
                return False
            job["triggered"], job["started"] = False, now
            return True

    def set_job_finished(
        self, key: str, lease_name: str, owner: str, token: int, outcome: str, error: str | None
    ) -> bool:
        with self._state() as state:
            now = self.now_us()
            if not self._owns(state["leases"].get(lease_name), owner, token, now):
                return False
            job = self._job(state, key)
            job["finished"], job["outcome"], job["error"] = now, outcome, error
            return True

    def control_recurring_job(self, key: str, action: str) -> bool:
        with self._state() as state:
            job = state["meta"].get(key)
            if job is None:
                return False
            if action == "trigger":
                job["triggered"] = True
            else:
                job["paused"] = action == "pause"
            return True

    def list_recurring_jobs(self) -> list[RecurringJobRecord]:
        with self._state() as state:
            now = self.now_us()
            records = []
            for key, job in sorted(state["meta"].items()):
                live = [run for run, expires in job["instances"].values() if expires > now]
                planned = [run for run in live if run is not None]
                records.append(
                    RecurringJobRecord(
                        key,
                        job["schedule"],
                        job["paused"],
                        job["triggered"],
                        job["started"],
                        job["finished"],
                        job["outcome"],
                        job["error"],
                        min(planned) if planned else None,
                        len(live),
                    )
                )
            return records

    # -- one-shot jobs ---------------------------------------------------------------------

    def put_jobs(self, jobs: Sequence[NewJob]) -> None:
        with self._state() as state:
            stored = {
                job.key: (row["run_at"], row["props"])
                for job in jobs
                if (row := state["jobs"].get(job.key)) is not None
            }
            duplicate = conflicting_job(jobs, stored)
            if duplicate is not None:
                raise DuplicateJobError(duplicate)
            for job in jobs:
                if job.key in stored:
                    continue  # stored identically: a retry
                state["jobs"][job.key] = {
                    "run_at": job.run_at_us,
                    "props": job.props_json,
                    "due": job.run_at_us,
                    "owner": None,
                    "claim": 0,
                }

    def claim_due_jobs(self, owner: str, limit: int, claim_ttl: float) -> list[ClaimedJob]:
        with self._state() as state:
            now = self.now_us()
            due = sorted(
                (row["due"], key) for key, row in state["jobs"].items() if row["due"] <= now
            )[:limit]
            claimed = []
            for _, key in due:
                row = state["jobs"][key]
                row["owner"], row["claim"] = owner, row["claim"] + 1
                row["due"] = now + int(claim_ttl * _US)
                claimed.append(ClaimedJob(key, row["run_at"], row["props"], row["claim"]))
            return claimed

    def renew_job_claims(
        self, owner: str, claims: Sequence[tuple[str, int]], claim_ttl: float
    ) -> list[str]:
        with self._state() as state:
            now = self.now_us()
            renewed = []
            for key, claim in claims:
                row = state["jobs"].get(key)
                if row and row["owner"] == owner and row["claim"] == claim and row["due"] > now:
                    row["due"] = now + int(claim_ttl * _US)
                    renewed.append(key)
            return renewed

    def complete_job(self, key: str, owner: str, claim: int) -> bool:
        with self._state() as state:
            row = state["jobs"].get(key)
            if row is None or row["owner"] != owner or row["claim"] != claim:
                return False
            del state["jobs"][key]
            return True

    def cancel_job(self, key: str) -> bool:
        with self._state() as state:
            row = state["jobs"].pop(key, None)
            if row is None:
                return False
            return bool(row["owner"] is None or row["due"] <= self.now_us())

    def list_jobs(self) -> list[StoredJob]:
        with self._state() as state:
            now = self.now_us()
            pending = [
                StoredJob(key, row["run_at"], row["props"])
                for key, row in state["jobs"].items()
                if row["owner"] is None or row["due"] <= now
            ]
        return sorted(pending, key=lambda job: (job.run_at_us, job.key))

    def list_jobs_page(
        self, prefix: str, after: str | None, limit: int
    ) -> tuple[list[StoredJob], str | None]:
        with self._state() as state:
            now = self.now_us()
            keys = sorted(
                key
                for key in state["jobs"]
                if key.startswith(prefix) and (after is None or key > after)
            )[:limit]
            page = [
                StoredJob(key, row["run_at"], row["props"])
                for key in keys
                if (row := state["jobs"][key])["owner"] is None or row["due"] <= now
            ]
        return page, (keys[-1] if len(keys) == limit else None)

    def count_jobs(self) -> int:
        with self._state() as state:
            return len(state["jobs"])

    def next_job_delay(self) -> float | None:
        with self._state() as state:
            dues = [row["due"] for row in state["jobs"].values()]
        if not dues:
            return None
        delay: float = max(0.0, (min(dues) - self.now_us()) / _US)
        return delay

    # -- plumbing --------------------------------------------------------------------------

    def set_listener(self, listener: ChangeListener | None) -> None:
        """No notifications: waiters fall back on their deadlines."""

    def set_watch_interval(self, seconds: float | None) -> None:
        """Nothing to watch."""

    def close(self) -> None:
        self._closed = True
