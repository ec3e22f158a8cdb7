"""a3c.py: the math, the shared optimizer across processes, and the script run as a user runs it."""
import importlib.util
import os
import subprocess
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
import a3c  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")


def test_nstep_returns_against_brute_force():
    rewards, gamma = [1.0, 0.5, -2.0, 3.0], 0.9
    for bootstrap in (0.0, 7.0):  # terminated, or cut off / truncated with V(s_T) = 7
        expected = [sum(gamma**k * r for k, r in enumerate(rewards[t:])) + gamma ** (len(rewards) - t) * bootstrap
                    for t in range(len(rewards))]
        np.testing.assert_allclose(a3c.nstep_returns(rewards, bootstrap, gamma), expected, rtol=1e-6)


def test_gaussian_matches_closed_form():
    assert_gaussian_matches_closed_form(a3c.gaussian)


def test_env_action_clips_the_sample_to_the_box():
    check_env_action_clips_to_the_box(a3c)


def test_running_moments_match_numpy():
    """Batches folded in one after another give the mean and variance of all of them together."""
    batches = [np.random.default_rng(k).normal(k, 1 + k, size=(5 + k, 3)) for k in range(4)]
    mean, var, count = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), torch.tensor(1e-4, dtype=torch.float64)
    for batch in batches:
        a3c.update_moments(mean, var, count, torch.from_numpy(batch))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(var, everything.var(0), rtol=1e-4)


def test_shared_adam_matches_torch():
    check_shared_adam_matches_torch(a3c)


def test_second_process_advances_shared_adam():
    check_spawned_process_advances_shared_adam(a3c)


def test_gradients_reach_shared_model_fresh_on_every_update():
    check_fresh_gradients_on_every_update(a3c)


def test_learns_cartpole(tmp_path):
    # two workers, one per core of a 2-core CI machine: still Hogwild, and fewer steps and seconds than 4 or 8 there
    proc, summary = run_script("a3c.py", "--n-workers", 2, cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    # solved: the mean of 100 consecutive training episodes reached 475 (episodes that the workers finish
    # after the stop signal still count towards train_return_mean100, so it may end a little lower)
    assert summary["solved"] and summary["target_return"] == 475 and summary["train_return_mean100"] > 400, summary
    assert 0 < summary["solved_at_step"] <= summary["global_step"] and not summary["interrupted"]
    # the weights kept when the target was reached: their greedy policy rarely drops far below 475
    assert summary["eval_return_mean"] >= 400 and summary["eval_episodes"] == 10, summary

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.dirname(tmp_path / summary["model_path"]), size_guidance={"scalars": 0}).Reload()
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/policy_loss", "losses/value_loss",
            "losses/entropy", "eval/episodic_return"} <= set(events.Tags()["scalars"])
    # losses are logged for every update, not only for those that end an episode
    assert len(events.Scalars("losses/policy_loss")) > 2 * len(events.Scalars("charts/episodic_return"))

    # the saved checkpoint evaluates alone, without training (and records its episodes where moviepy is installed)
    video = importlib.util.find_spec("moviepy") is not None
    proc = subprocess.run([sys.executable, str(REPO / "a3c.py"), "--eval-checkpoint", summary["model_path"], "--eval-episodes", "1",
                           *(["--capture-video"] if video else [])], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"evaluated {summary['model_path']}: return ") and "over 1 episodes" in proc.stdout
    if video:
        assert len(list((tmp_path / summary["model_path"]).parent.glob("videos/*.mp4"))) == 1


def test_learns_inverted_pendulum(tmp_path):
    check_learns_inverted_pendulum("a3c.py", tmp_path)


def test_lstm_replays_rollouts_and_carries_state():
    check_lstm_replay_and_state(a3c)


def test_lstm_learns_cartpole_without_velocities(tmp_path):
    """--lstm infers the velocities from the history: a feed-forward policy stays near a mean return of 50 here, and its
    greedy policy near 40 (docs/a3c.md). gae.py runs the same recurrent worker, network and evaluation (its replay test
    checks them), so it is not run too."""
    env_id = "tests.pomdp_cartpole:CartPoleNoVelocity-v0"
    proc, summary = run_script("a3c.py", "--lstm", "--env-id", env_id, "--n-workers", 2, "--target-return", 200,
                               "--total-timesteps", 200_000, cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert summary["solved"] and summary["eval_return_mean"] >= 120, summary  # greedy, the LSTM state carried through

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # the checkpoint keeps the LSTM: evaluated alone, its first episode (same seed, greedy) is the run's first evaluation
    events = EventAccumulator(os.path.dirname(tmp_path / summary["model_path"]), size_guidance={"scalars": 0}).Reload()
    proc = subprocess.run([sys.executable, str(REPO / "a3c.py"), "--eval-checkpoint", summary["model_path"], "--env-id", env_id,
                           "--eval-episodes", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split(": return ")[1].split()[0]) == events.Scalars("eval/episodic_return")[0].value, proc.stdout


def test_env_without_threshold_runs_its_budget_under_spawn(tmp_path):
    check_runs_budget_without_threshold_under_spawn("a3c.py", tmp_path)


@linux_only
def test_group_sigterm_while_workers_start_saves(tmp_path):
    check_group_sigterm_while_workers_start_saves("a3c.py", tmp_path)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@linux_only
def test_worker_failure_exits_1(tmp_path, method):
    proc, stderr, seconds = run_with_failing_env("a3c.py", tmp_path, method)
    assert proc.returncode == 1, stderr
    assert seconds < 30
    assert "simulated failure in the environment" in stderr and "worker" in stderr
    assert wait_session_empty(proc.pid) == []  # no worker or multiprocessing helper outlives the run
    assert not list(tmp_path.glob("runs/*/summary.json")) and not list(tmp_path.glob("runs/*/*.pt"))


@linux_only
def test_killed_worker_exits_1(tmp_path):
    """A worker that dies without a word (here SIGKILL) is noticed too."""
    proc, stderr = kill_a_worker("a3c.py", tmp_path)
    assert proc.returncode == 1, stderr
    assert "died with exit code -9" in stderr
    assert wait_session_empty(proc.pid) == []


@linux_only
def test_killed_main_process_leaves_no_worker_behind(tmp_path):
    check_killed_main_leaves_no_worker("a3c.py", tmp_path)


@linux_only
@ctrl_c_or_kill
def test_ctrl_c_or_kill_saves_and_exits_128_plus_signal(tmp_path, signum, to_group, exit_code):
    check_signal_saves_and_exits_128_plus_signal("a3c.py", tmp_path, signum, to_group, exit_code)


BAD_INPUT = [
    (["--env-id", "NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
    (["--env-id", "Blackjack-v1"], ["Blackjack-v1", "flat Box"]),
    (["--env-id", "CarRacing-v3"], ["CarRacing-v3", "flat Box"]),
    (["--n-workers", "0"], ["--n-workers"]),
    (["--n-steps", "-5"], ["--n-steps"]),
    (["--gamma", "1.5"], ["--gamma"]),
    (["--eval-checkpoint", "missing.pt"], ["missing.pt"]),
]


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_bad_input_exits_2(tmp_path, monkeypatch, capsys, args, words):
    proc = run_main_in_process(a3c, monkeypatch, capsys, tmp_path, *args)
    assert_bad_input(proc, "error:", *words)
    assert not (tmp_path / "runs").exists()


def test_bad_input_exits_2_as_a_process(tmp_path):
    proc, _ = run_script("a3c.py", *BAD_INPUT[0][0], cwd=tmp_path, timeout=300)
    assert_bad_input(proc, "error:", *BAD_INPUT[0][1])


def test_capture_video_without_moviepy_exits_2(tmp_path):
    if importlib.util.find_spec("moviepy") is not None:
        pytest.skip("moviepy is installed")
    proc, _ = run_script("a3c.py", "--capture-video", "--total-timesteps", 2000, cwd=tmp_path, timeout=300)
    assert_bad_input(proc, "--capture-video needs moviepy: pip install moviepy")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, env_id, words", [("a2c.py", "CartPole-v1", ["other.pt", "not an a3c.py checkpoint"]), ("a3c.py", "Acrobot-v1", ["Acrobot-v1"])])
def test_foreign_checkpoint_exits_2(tmp_path, monkeypatch, capsys, script, env_id, words):
    torch.save({"script": script, "model": {}, "args": {"env_id": env_id}}, tmp_path / "other.pt")
    proc = run_main_in_process(a3c, monkeypatch, capsys, tmp_path, "--eval-checkpoint", "other.pt")
    assert_bad_input(proc, "error:", *words)
