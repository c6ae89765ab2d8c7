"""Multi-process tests on the embedded SQLite store (real OS processes)."""
