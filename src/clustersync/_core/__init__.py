"""Pure decisions of clustersync: no I/O, no threads, no asyncio.

Everything here is a function of its arguments (time is passed in), so it is tested
exhaustively with hypothesis and reused unchanged by the sync and asyncio orchestration.
"""
