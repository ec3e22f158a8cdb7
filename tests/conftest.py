"""Helpers shared by the tests: run a script as a user would and read its summary.json."""
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

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
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def run_main_in_process(module, monkeypatch, capsys, cwd, *args):
    """`module.main()` with these arguments in this process (a subprocess would spend seconds on imports), for the
    errors caught before anything starts; return what a subprocess would: returncode, stdout, stderr."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [os.path.basename(module.__file__), *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    return SimpleNamespace(returncode=exit_info.value.code, **dict(zip(("stdout", "stderr"), capsys.readouterr())))


@pytest.fixture
def repo():
    return REPO


def wait_until_training(cwd, proc, timeout, settle_s=2):
    """Wait (up to `timeout` s, or until `proc` exits) for the run under `cwd` to write its events file, then `settle_s`."""
    deadline = time.time() + timeout
    while not list(Path(cwd).glob("runs/*/events.out.tfevents.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(settle_s)


# Ctrl-C (SIGINT to the process group, as a terminal sends it), `kill` (SIGTERM to the launched process alone) and a
# scheduler's SIGTERM to every process of the run (as Slurm sends it): each saves the run and exits 128 + the signal
ctrl_c_or_kill = pytest.mark.parametrize("signum, to_group, exit_code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143),
                                                                        (signal.SIGTERM, True, 143)], ids=["ctrl-c", "kill", "kill-group"])


def send(proc, signum, to_group):
    """`signum` to every process in the group of `proc` (started in a session of its own), or to `proc` alone."""
    if to_group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)


def interrupt_run(script, *args, cwd, signum=signal.SIGINT, to_group=True, command=None, settle_s=2):
    """Start a training run (`python <script> <args>`, or `command`), let it train `settle_s` once its run directory
    exists, then send `signum` to its whole process group (`to_group`) or to the launched process alone; return
    (process, stderr, summary or None)."""
    # a shell that starts pytest in the background hands it SIGINT ignored; give the run the terminal's default
    proc = subprocess.Popen(command or [sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_training(cwd, proc, timeout=60, settle_s=settle_s)
    send(proc, signum, to_group)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # leave nothing running behind a failed test
        raise
    return proc, stderr, read_summary(cwd)


def leftover_processes(marker):
    """Processes whose environment carries `marker` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:  # gone meanwhile, or a zombie
            pass
    return found


def kill_launcher(script, *args, cwd, command=None, timeout=30, signum=signal.SIGKILL, to_group=False):
    """Start a training run, let it train ~2 s once its run directory exists, then send `signum` to the process that
    was launched (the script, or torchrun) alone, as the OOM killer, `kill -9` or `kill` would, or to its whole process
    group (`to_group`). Return (the run's processes still alive `timeout` s later, or as soon as there are none;
    summary or None)."""
    marker = f"AC_TEST_{uuid.uuid4().hex}"  # every process of the run inherits it
    proc = subprocess.Popen(command or [sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, text=True, start_new_session=True,
                            env={**os.environ, marker: "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_training(cwd, proc, timeout=120)
    send(proc, signum, to_group)
    proc.wait()
    deadline = time.time() + timeout
    while leftover_processes(marker) and time.time() < deadline:
        time.sleep(0.2)
    left = leftover_processes(marker)
    for pid in left:  # leave nothing running behind a failed test
        os.kill(int(pid), signal.SIGKILL)
    return left, read_summary(cwd)


def brute_force_returns(rewards, terminated, truncated, final_values, last_values, gamma):
    """Sum gamma^k r_{t+k} forward from each step to the episode's end or the rollout's end, then
    add the discounted bootstrap: 0 at a termination, V(final_obs) at a truncation, V(s_T) at the end."""
    T, n_envs = len(rewards), len(rewards[0])
    returns = [[0.0] * n_envs for _ in range(T)]
    for i in range(n_envs):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * rewards[k][i]
                if terminated[k][i]:
                    break
                if truncated[k][i]:
                    total += gamma ** (k - t + 1) * final_values[k][i]
                    break
                if k == T - 1:
                    total += gamma ** (k - t + 1) * last_values[i]
                    break
                k += 1
            returns[t][i] = total
    return returns


def assert_vector_nstep_returns_match_brute_force(nstep_returns):
    """`nstep_returns(rewards, dones, bootstrap_values, last_value, gamma)` of the vectorized scripts
    on a (T=6, n_envs=2) rollout with terminations and truncations in the middle."""
    gamma = 0.9
    rewards = [[1.0, 0.5], [2.0, -1.0], [0.5, 3.0], [1.5, 1.0], [-1.0, 2.0], [1.0, 0.25]]
    # env 0 terminates at t=1 and is truncated at t=4; env 1 is truncated at t=2 and terminates at t=3
    terminated = [[False, False], [True, False], [False, False], [False, True], [False, False], [False, False]]
    truncated = [[False, False], [False, False], [False, True], [False, False], [True, False], [False, False]]
    final_values = [[0.0, 0.0], [0.0, 0.0], [0.0, 7.0], [0.0, 0.0], [5.0, 0.0], [0.0, 0.0]]
    last_values = [10.0, -4.0]
    expected = brute_force_returns(rewards, terminated, truncated, final_values, last_values, gamma)

    terminated_t, truncated_t = torch.tensor(terminated), torch.tensor(truncated)
    # the script's convention: bootstrap_values is V(final_obs) on truncations, 0 on terminations
    bootstrap = torch.tensor(final_values) * (truncated_t & ~terminated_t)
    returns = nstep_returns(torch.tensor(rewards), terminated_t | truncated_t, bootstrap, torch.tensor(last_values), gamma)
    torch.testing.assert_close(returns, torch.tensor(expected))


def assert_gaussian_matches_closed_form(gaussian):
    """`gaussian(mean, log_std)` (mean (B, A), log_std (A,)) is the diagonal Gaussian policy of a script:
    its log-probability and entropy, summed over action dimensions, equal the closed forms
    log N(a; mu, sigma) = sum_i -(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 and
    H = sum_i log sigma_i + (1 + log(2 pi)) / 2, on hand-made numbers."""
    mean = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    log_std = torch.tensor([0.0, -1.0])
    action = torch.tensor([[1.0, 1.0], [3.5, -0.5]])  # outside the env's bounds on purpose: never clipped here
    sigma = log_std.exp()
    expected_log_prob = (-(action - mean) ** 2 / (2 * sigma**2) - log_std - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    expected_entropy = (log_std + 0.5 * (1 + torch.log(torch.tensor(2 * torch.pi)))).sum().expand(2)
    policy = gaussian(mean, log_std)
    torch.testing.assert_close(policy.log_prob(action), expected_log_prob)
    torch.testing.assert_close(policy.entropy(), expected_entropy)
    # the first row by hand: a = mu + sigma in dim 0 and a = mu in dim 1
    torch.testing.assert_close(policy.log_prob(action)[0], torch.tensor(-0.5 - 0.0 - (-1.0) - math.log(2 * math.pi)))
