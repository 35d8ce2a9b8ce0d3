"""The test suite's own rule (tests/pytest_ci.py, loaded by every pytest command ctest runs):
skips are listed with their reason, and under CI=true a skipped test fails the run, while an
expected failure (xfail) does not."""

import os
import subprocess
import sys

import pytest

SAMPLE = '''
import pytest

def test_runs():
    assert True

def test_skips():
    pytest.skip("needs something this machine lacks")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_xfails():
    assert False
'''


def run_pytest(tmp_path, body, ci):
    (tmp_path / "test_sample.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    tests = os.path.join(os.environ.get("WSLUAD_SRC", ""), "tests")
    env["PYTHONPATH"] = tests
    return subprocess.run(
        [sys.executable, "-B", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "-p", "pytest_ci", str(tmp_path / "test_sample.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60)


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_a_skip_is_listed_outside_ci(tmp_path, ci):
    r = run_pytest(tmp_path, SAMPLE, ci)
    assert r.returncode == 0, r.stdout
    assert "SKIPPED" in r.stdout and "needs something this machine lacks" in r.stdout


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_skip_fails_under_ci(tmp_path, ci):
    r = run_pytest(tmp_path, SAMPLE, ci)
    assert r.returncode == 1, r.stdout
    assert "needs something this machine lacks" in r.stdout
    assert "1 skipped test(s) fail this run" in r.stdout


def test_a_skipped_module_fails_under_ci(tmp_path):
    r = run_pytest(tmp_path, "import pytest\npytest.skip('no module today', "
                             "allow_module_level=True)\n", "true")
    assert r.returncode == 1, r.stdout
    assert "no module today" in r.stdout


def test_no_skip_passes_under_ci(tmp_path):
    body = SAMPLE.replace('pytest.skip("needs something this machine lacks")', "pass")
    r = run_pytest(tmp_path, body, "true")
    assert r.returncode == 0, r.stdout


def test_a_failure_stays_a_failure_under_ci(tmp_path):
    r = run_pytest(tmp_path, SAMPLE + "\ndef test_fails():\n    assert False\n", "true")
    assert r.returncode == 1, r.stdout
    assert "1 failed" in r.stdout
