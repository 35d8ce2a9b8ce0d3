"""pytest plugin for wsluad's Python suites (tests/integration, tests/conformance), loaded by their
ctest commands with `-p pytest_ci`. Those commands also pass -rs, so every skip is listed with its
reason. Under CI (the environment variable CI set to true, as GitHub Actions, GitLab CI and
.ci/run do) a skipped test fails the run: there every test must really run, and a missing
package or capability is an error to fix, not a quiet pass."""

import os

import pytest

_skipped = []  # reports of skipped tests and modules, xfails excluded


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_collectreport(report):
    if report.skipped:
        _skipped.append(report)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report)


def pytest_sessionfinish(session, exitstatus):
    # Only a run that would otherwise pass is changed (NO_TESTS_COLLECTED: everything skipped).
    if _skipped and in_ci() and exitstatus in (pytest.ExitCode.OK,
                                               pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped and in_ci():
        terminalreporter.write_line(
            f"CI={os.environ['CI']}: {len(_skipped)} skipped test(s) fail this run; every test "
            "must run in CI (the reasons are listed above)", red=True, bold=True)
