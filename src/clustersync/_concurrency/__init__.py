"""The hand-written concurrency shim: the only code not written once.

``_async/`` modules (and the asyncio store drivers) import :mod:`.aio` as ``shim``;
``scripts/unasync.py`` points the generated sync code at :mod:`.threads`, which has the
same names built on threads. Keep the two files in step.
"""
