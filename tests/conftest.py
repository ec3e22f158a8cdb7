"""Helpers shared by the tests: run a script as a user would and read its summary.json."""
import json
import os
import subprocess
import sys
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
