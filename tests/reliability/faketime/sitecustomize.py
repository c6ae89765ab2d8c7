"""Imported at start-up by Python processes that ``test_clock_skew`` runs under libfaketime
(this directory is put first on their ``PYTHONPATH``).

libfaketime 0.9.10 (Debian 12) breaks ``time.sleep`` on Python >= 3.11 when the monotonic
clock is left unfaked (``FAKETIME_DONT_FAKE_MONOTONIC=1``): Python sleeps with
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...)``, which libfaketime shifts by the
wall-clock offset, and the kernel rejects the result with EINVAL
(https://github.com/wolfcw/libfaketime/issues/426, fixed in later releases). Sleep with
``select`` instead, which libfaketime passes through; everything else (threading waits,
socket timeouts, asyncio) works as is.
"""

from __future__ import annotations

import math
import operator
import os
import select
import time
from typing import SupportsIndex


def _sleep(seconds: float | SupportsIndex) -> None:
    length = seconds if isinstance(seconds, float) else float(operator.index(seconds))
    if math.isnan(length) or length < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + length
    while (remaining := deadline - time.monotonic()) > 0:
        select.select([], [], [], remaining)


if os.environ.get("FAKETIME") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":
    time.sleep = _sleep
