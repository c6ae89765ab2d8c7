"""Store backends: narrow, atomic operations on shared state.

Each backend offers the same semantic operations (see :mod:`clustersync.backends.base`),
each atomic and, on a server, one round trip. Memory is the reference implementation.
"""
