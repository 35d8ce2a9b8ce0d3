"""pytest hooks for the integration tests: a failing test's report carries the log of every
server still running (servers started by fixtures included). The redis_server fixture (a real
redis-server, see redisutil.py) is available to every test module."""

import pytest

import harness
from redisutil import redis_server  # noqa: F401 (the fixture, for every test module)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for s in list(harness.Server.live):
            rep.sections.append((f"server log: {' '.join(s.cmd)}", s.log()))
