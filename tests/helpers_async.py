"""Helpers for the tests of the worker scripts (a3c.py, gae.py): an environment that fails on demand, a
check that a run left no process behind, and the workers' time slice."""
import os
import re
import subprocess
import sys
import time

import pytest

# Linux takes sched_setattr's sched_runtime as a SCHED_OTHER task's time slice from 6.12 on
kernel_takes_custom_slices = pytest.mark.skipif(
    not sys.platform.startswith("linux") or [int(part) for part in re.findall(r"\d+", os.uname().release)[:2]] < [6, 12],
    reason="Linux takes sched_runtime as the time slice from 6.12")


def time_slice_after_asking(script_dir, module):
    """The time slice, in ns, of a fresh process after `module.ask_for_long_time_slices()`."""
    code = (f"import re, {module}; {module}.ask_for_long_time_slices(); "
            "print(re.search(r'se.slice\\s*:\\s*(\\d+)', open('/proc/self/sched').read())[1])")
    return int(subprocess.run([sys.executable, "-c", code], cwd=script_dir, capture_output=True, text=True, check=True).stdout)

# Written to a file `failing_env.py` on PYTHONPATH and passed as `--env-id failing_env:FailingCartPole-v0`,
# so that spawned workers (which re-import everything) find it too. It raises after 200 steps per process.
FAILING_ENV = """
import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

class FailingCartPole(CartPoleEnv):
    steps = 0

    def step(self, action):
        FailingCartPole.steps += 1
        if FailingCartPole.steps > 200:
            raise RuntimeError("simulated failure in the environment")
        return super().step(action)

gym.register("FailingCartPole-v0", entry_point=FailingCartPole, max_episode_steps=500, reward_threshold=475.0)
"""


def session_processes(sid):
    """Processes still alive in session `sid` (the script, its workers and multiprocessing helpers); Linux only."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == sid:
                alive.append(int(pid))
        except OSError:
            pass
    return alive


def wait_session_empty(sid, timeout=10):
    """Wait up to `timeout` seconds for session `sid` to empty; return the processes still in it."""
    deadline = time.time() + timeout
    while session_processes(sid) and time.time() < deadline:
        time.sleep(0.1)
    return session_processes(sid)


def run_with_failing_env(script, tmp_path, start_method):
    """Run `script` with 2 workers on FailingCartPole; return (process, stderr, seconds it took)."""
    import signal
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    (tmp_path / "failing_env.py").write_text(textwrap.dedent(FAILING_ENV))
    start = time.time()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent.parent / script), "--env-id", "failing_env:FailingCartPole-v0",
         "--n-workers", "2", "--start-method", start_method],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, stderr, time.time() - start
