"""gae.py: GAE against brute force, the shared optimizer across processes, and the script run as a user runs it."""
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, assert_bad_input, assert_gaussian_matches_closed_form, ctrl_c_or_kill, run_main_in_process, run_script
from helpers_async import (check_env_action_clips_to_the_box, check_fresh_gradients_on_every_update,
                           check_learns_inverted_pendulum, check_lstm_replay_and_state, check_runs_budget_without_threshold_under_spawn,
                           check_group_sigterm_while_workers_start_saves,
                           check_killed_main_leaves_no_worker, check_signal_saves_and_exits_128_plus_signal, check_shared_adam_matches_torch,
                           check_spawned_process_advances_shared_adam, kill_a_worker, run_with_failing_env, wait_session_empty)

sys.path.insert(0, str(REPO))
import gae  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

# One rollout of 8 steps: the episode terminates at t=2, a new one is truncated (time limit) at t=5, and the
# third runs on past the rollout's end. V(s_3) and V(s_6) are the values of the reset states of new episodes.
GAMMA = 0.9
REWARDS = [1.0, 0.5, -2.0, 3.0, 1.5, 0.25, -1.0, 2.0]
VALUES = [0.3, -0.7, 1.1, 2.0, -0.4, 0.9, 1.6, -1.2]  # V(s_t)
TERMINATED = [0, 0, 1, 0, 0, 0, 0, 0]
TRUNCATED = [0, 0, 0, 0, 0, 1, 0, 0]
FINAL_VALUE = 4.2  # V(final observation) of the truncated episode
BOOTSTRAP = 3.0  # V(s_8), after the rollout
DONES = [max(a, b) for a, b in zip(TERMINATED, TRUNCATED)]
# V(s_{t+1}) as the script passes it: the next state's value; 99 after the termination, where it must be ignored
NEXT_VALUES = [-0.7, 1.1, 99.0, -0.4, 0.9, FINAL_VALUE, -1.2, BOOTSTRAP]


def segment_end(t):
    """The last step of the episode segment that contains step t, inside the rollout."""
    return next((k for k in range(t, len(REWARDS)) if DONES[k]), len(REWARDS) - 1)


def value_after(e):
    """The value the step after `e`, the end of a segment, contributes: 0 if terminal."""
    return 0.0 if TERMINATED[e] else NEXT_VALUES[e]


def nstep_advantage(t, n):
    """A^(n)_t = r_t + ... + gamma^(n-1) r_{t+n-1} + gamma^n V(s_{t+n}) - V(s_t), within t's segment."""
    end = t + n - 1
    assert end <= segment_end(t)
    value_next = value_after(end) if end == segment_end(t) else VALUES[end + 1]
    return sum(GAMMA**k * REWARDS[t + k] for k in range(n)) + GAMMA**n * value_next - VALUES[t]


def td_error(t):
    return nstep_advantage(t, 1)


def advantages(lam):
    return gae.compute_gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, DONES, GAMMA, lam)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_is_discounted_sum_of_td_errors(lam):
    expected = [sum((GAMMA * lam) ** (k - t) * td_error(k) for k in range(t, segment_end(t) + 1)) for t in range(len(REWARDS))]
    np.testing.assert_allclose(advantages(lam), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam", [0.3, 0.95])
def test_gae_is_lambda_weighted_mix_of_nstep_advantages(lam):
    """A_t = (1 - lambda) * sum_n lambda^(n-1) A^(n)_t, the longest n available in the segment taking the rest of the weight."""
    expected = []
    for t in range(len(REWARDS)):
        longest = segment_end(t) - t + 1
        mix = sum((1 - lam) * lam ** (n - 1) * nstep_advantage(t, n) for n in range(1, longest))
        expected.append(mix + lam ** (longest - 1) * nstep_advantage(t, longest))
    np.testing.assert_allclose(advantages(lam), expected, rtol=1e-5, atol=1e-6)


def test_lambda_0_is_td_error():
    np.testing.assert_allclose(advantages(0.0), [td_error(t) for t in range(len(REWARDS))], rtol=1e-6, atol=1e-6)
    # by hand at the termination and the truncation: the former ignores V(s_3), the latter uses V(final observation)
    np.testing.assert_allclose(advantages(0.0)[[2, 5]], [-2.0 - 1.1, 0.25 + GAMMA * FINAL_VALUE - 0.9], rtol=1e-6)


def test_lambda_1_is_nstep_advantage():
    """lambda = 1: R_t - V(s_t), R_t the discounted rewards to the segment's end plus the discounted bootstrap (a3c.py's A_t)."""
    expected = []
    for t in range(len(REWARDS)):
        e = segment_end(t)
        ret = sum(GAMMA ** (k - t) * REWARDS[k] for k in range(t, e + 1)) + GAMMA ** (e + 1 - t) * value_after(e)
        expected.append(ret - VALUES[t])
    np.testing.assert_allclose(advantages(1.0), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_matches_closed_form():
    assert_gaussian_matches_closed_form(gae.gaussian)


def test_env_action_clips_the_sample_to_the_box():
    check_env_action_clips_to_the_box(gae)


def test_shared_adam_matches_torch():
    check_shared_adam_matches_torch(gae)


def test_second_process_advances_shared_adam():
    check_spawned_process_advances_shared_adam(gae)


def test_gradients_reach_shared_model_fresh_on_every_update():
    check_fresh_gradients_on_every_update(gae)


def test_learns_cartpole(tmp_path):
    proc, summary = run_script("gae.py", "--n-workers", 2, cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    # solved: the mean of 100 consecutive training episodes reached 475 (episodes that the workers finish
    # after the stop signal still count towards train_return_mean100, so it may end a little lower)
    assert summary["script"] == "gae.py" and summary["solved"] and summary["target_return"] == 475, summary
    assert summary["train_return_mean100"] > 400 and 0 < summary["solved_at_step"] <= summary["global_step"], summary
    assert summary["eval_return_mean"] >= 400 and summary["eval_episodes"] == 10, summary
    checkpoint = torch.load(tmp_path / summary["model_path"], weights_only=True)
    assert checkpoint["script"] == "gae.py" and checkpoint["args"]["gae_lambda"] == 0.95


def test_learns_inverted_pendulum(tmp_path):
    check_learns_inverted_pendulum("gae.py", tmp_path)


def test_lstm_replays_rollouts_and_carries_state():
    check_lstm_replay_and_state(gae)


def test_env_without_threshold_runs_its_budget_under_spawn(tmp_path):
    check_runs_budget_without_threshold_under_spawn("gae.py", tmp_path)


@linux_only
def test_group_sigterm_while_workers_start_saves(tmp_path):
    check_group_sigterm_while_workers_start_saves("gae.py", tmp_path)


@linux_only
def test_worker_failure_exits_1(tmp_path):
    """Under fork; a3c.py's test runs the same supervision under spawn, and gae.py's workers start under spawn above."""
    proc, stderr, seconds = run_with_failing_env("gae.py", tmp_path, "fork")
    assert proc.returncode == 1, stderr
    assert seconds < 30
    assert "simulated failure in the environment" in stderr and "worker" in stderr
    assert wait_session_empty(proc.pid) == []  # no worker or multiprocessing helper outlives the run
    assert not list(tmp_path.glob("runs/*/summary.json")) and not list(tmp_path.glob("runs/*/*.pt"))


@linux_only
def test_killed_worker_exits_1(tmp_path):
    proc, stderr = kill_a_worker("gae.py", tmp_path)
    assert proc.returncode == 1 and "died with exit code -9" in stderr, stderr
    assert wait_session_empty(proc.pid) == []


@linux_only
def test_killed_main_process_leaves_no_worker_behind(tmp_path):
    check_killed_main_leaves_no_worker("gae.py", tmp_path)


@linux_only
@ctrl_c_or_kill
def test_ctrl_c_or_kill_saves_and_exits_128_plus_signal(tmp_path, signum, to_group, exit_code):
    check_signal_saves_and_exits_128_plus_signal("gae.py", tmp_path, signum, to_group, exit_code)


BAD_INPUT = [
    (["--gae-lambda", "1.5"], ["--gae-lambda"]),
    (["--gae-lambda", "-0.1"], ["--gae-lambda"]),
    (["--env-id", "Blackjack-v1"], ["flat Box", "gae.py"]),
    (["--n-steps", "0"], ["--n-steps"]),
    (["--gamma", "0"], ["--gamma"]),
    (["--eval-checkpoint", "missing.pt"], ["missing.pt"]),
]


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_bad_input_exits_2(tmp_path, monkeypatch, capsys, args, words):
    proc = run_main_in_process(gae, monkeypatch, capsys, tmp_path, *args)
    assert_bad_input(proc, "error:", *words)
    assert not (tmp_path / "runs").exists()


def test_bad_input_exits_2_as_a_process(tmp_path):
    proc, _ = run_script("gae.py", *BAD_INPUT[0][0], cwd=tmp_path, timeout=300)
    assert_bad_input(proc, "error:", *BAD_INPUT[0][1])


def test_a3c_checkpoint_exits_2(tmp_path, monkeypatch, capsys):
    torch.save({"script": "a3c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, tmp_path / "a3c.pt")
    proc = run_main_in_process(gae, monkeypatch, capsys, tmp_path, "--eval-checkpoint", "a3c.pt")
    assert_bad_input(proc, "error:", "a3c.pt", "not a gae.py checkpoint")
