"""Helpers shared by the tests: run a script as a user would and read its summary.json."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_script(script, *args, cwd, timeout=300, env=None, command=None):
    """Run `python <script> <args>` in `cwd` (so `runs/` lands there); return (process, summary or None)."""
    Path(cwd).mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = command or [sys.executable, str(REPO / script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc, read_summary(cwd)


def read_summary(cwd):
    """The summary.json of the newest run under `cwd/runs`, or None if there is none."""
    summaries = sorted(Path(cwd).glob("runs/*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summaries[-1].read_text()) if summaries else None


def assert_bad_input(proc, *words):
    """A user error: exit 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


@pytest.fixture
def repo():
    return REPO


def interrupt_run(script, *args, cwd):
    """Start a training run, let it train ~2 s once its run directory exists, then Ctrl-C it as a
    terminal does (SIGINT to the whole process group); return (process, stderr, summary or None)."""
    proc = subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while not list(Path(cwd).glob("runs/*/events.out.tfevents.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc, stderr, read_summary(cwd)
