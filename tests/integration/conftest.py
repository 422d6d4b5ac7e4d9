"""pytest fixtures for the wsgate integration tests."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import WSGATE_BIN, GateLauncher  # noqa: E402


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item so fixtures can see failures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def _failed(node):
    return any(getattr(node, "rep_" + phase, None) is not None
               and getattr(node, "rep_" + phase).failed for phase in ("setup", "call"))


@pytest.fixture
def gates(request, tmp_path):
    """Launcher for wsgate processes; stops them afterwards and dumps stderr on failure."""
    launcher = GateLauncher(tmp_path)
    yield launcher
    launcher.stop_all()
    problems = []
    for index, gate in enumerate(launcher.gates):
        text = gate.stderr_text()
        # Sanitizer builds report here; any report fails the test that triggered it.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            if marker in text:
                problems.append(f"wsgate #{index}: sanitizer report ({marker})")
        if getattr(gate, "listeners", None) and gate.proc.returncode != 0:
            problems.append(f"wsgate #{index} exited with {gate.proc.returncode} on SIGTERM")
    if problems or _failed(request.node):
        for index, gate in enumerate(launcher.gates):
            print(f"\n----- wsgate #{index} stderr (exit {gate.proc.returncode}) -----")
            print(gate.stderr_text()[-20000:])
            with open(gate.config_path) as f:
                print(f"----- wsgate #{index} config -----\n{f.read()}")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def wsgate_bin():
    """Path of the wsgate binary; fails the test if it is not built."""
    if not os.path.exists(WSGATE_BIN):
        pytest.fail(f"wsgate binary not found at {WSGATE_BIN} (set WSGATE_BIN)")
    return WSGATE_BIN
