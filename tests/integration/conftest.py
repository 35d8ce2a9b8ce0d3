"""pytest hooks for the integration tests: a failing test's report carries the log of every
server still running (servers started by fixtures included). Fixtures for every test module:
redis_server (a real redis-server, see redisutil.py) and prefix (the build installed with
`cmake --install` into a temporary directory, once per module)."""

import os
import subprocess

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


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    build = os.environ.get("WSLUAD_BUILD")
    if not build:
        pytest.fail("WSLUAD_BUILD is not set (run the tests through ctest)")
    p = tmp_path_factory.mktemp("prefix")
    r = subprocess.run(["cmake", "--install", build, "--prefix", str(p)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout
    return p
