"""a3c.py: the math, the shared optimizers across processes, and the script run as a user runs it."""
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, assert_bad_input, interrupt_run, run_script
from helpers_async import kernel_takes_custom_slices, run_with_failing_env, time_slice_after_asking, wait_session_empty

sys.path.insert(0, str(REPO))
import a3c  # noqa: E402


def test_nstep_returns_against_brute_force():
    rewards, gamma = [1.0, 0.5, -2.0, 3.0], 0.9
    for bootstrap in (0.0, 7.0):  # terminated, or cut off / truncated with V(s_T) = 7
        expected = [sum(gamma**k * r for k, r in enumerate(rewards[t:])) + gamma ** (len(rewards) - t) * bootstrap
                    for t in range(len(rewards))]
        np.testing.assert_allclose(a3c.nstep_returns(rewards, bootstrap, gamma), expected, rtol=1e-6)


def _grads(model, k):
    torch.manual_seed(100 + k)
    return [torch.randn_like(p) for p in model.parameters()]


def _net():
    torch.manual_seed(0)
    return a3c.mlp(4, (8,), 2)


@pytest.mark.parametrize("shared_cls, torch_cls", [(a3c.SharedAdam, torch.optim.Adam), (a3c.SharedRMSprop, torch.optim.RMSprop)])
def test_shared_optimizer_matches_torch(shared_cls, torch_cls):
    shared, ref = _net().share_memory(), _net()
    shared_opt, ref_opt = shared_cls(shared.parameters(), lr=1e-2), torch_cls(ref.parameters(), lr=1e-2)
    assert all(t.is_shared() for state in shared_opt.state.values() for t in state.values())
    for k in range(5):
        for model, opt in ((shared, shared_opt), (ref, ref_opt)):
            for p, g in zip(model.parameters(), _grads(model, k)):
                p.grad = g
            opt.step()
    # the update wrote into the shared tensors rather than replacing them with private ones
    assert all(t.is_shared() for state in shared_opt.state.values() for t in state.values())
    for p, q in zip(shared.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
        for key, value in ref_opt.state[q].items():
            torch.testing.assert_close(shared_opt.state[p][key], value)


def _step_in_child(model, opt, steps):
    for k in range(steps):
        for p, g in zip(model.parameters(), _grads(model, k)):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("shared_cls, torch_cls", [(a3c.SharedAdam, torch.optim.Adam), (a3c.SharedRMSprop, torch.optim.RMSprop)])
def test_second_process_advances_shared_state(shared_cls, torch_cls):
    """Steps taken by a spawned process show up in this one: parameters, `step` and the moments."""
    shared, ref = _net().share_memory(), _net()
    shared_opt, ref_opt = shared_cls(shared.parameters(), lr=1e-2), torch_cls(ref.parameters(), lr=1e-2)
    child = torch.multiprocessing.get_context("spawn").Process(target=_step_in_child, args=(shared, shared_opt, 3))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    _step_in_child(ref, ref_opt, 3)
    for p, q in zip(shared.parameters(), ref.parameters()):
        assert shared_opt.state[p]["step"].item() == 3
        for key, value in ref_opt.state[q].items():
            torch.testing.assert_close(shared_opt.state[p][key], value)
        torch.testing.assert_close(p, q)
    # and this process continues from the shared state: a 4th step here equals the reference's 4th step
    for model, opt in ((shared, shared_opt), (ref, ref_opt)):
        for p, g in zip(model.parameters(), _grads(model, 3)):
            p.grad = g
        opt.step()
    for p, q in zip(shared.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
        assert shared_opt.state[p]["step"].item() == 4


def test_gradients_reach_shared_model_fresh_on_every_update():
    """With SGD(lr=1) each update moves the shared weights by exactly minus this update's gradient.

    Local gradients that pile up would move them by the sum of all gradients so far; a shared `.grad`
    aliased once to the local one would move them by the first gradient again."""
    local, shared = _net(), _net().share_memory()
    opt = torch.optim.SGD(shared.parameters(), lr=1.0)
    x = torch.randn(3, 4)
    for k in range(1, 4):
        w = torch.full((3, 2), float(k))  # the loss is linear in the outputs: each update has a different gradient
        loss = (local(x) * w).sum()
        expected = torch.autograd.grad(loss, list(local.parameters()), retain_graph=True)
        before = [p.detach().clone() for p in shared.parameters()]
        a3c.push_gradients(local, shared, opt, loss, max_grad_norm=1e9)
        for b, p, g in zip(before, shared.parameters(), expected):
            torch.testing.assert_close(b - p.detach(), g)


@kernel_takes_custom_slices
def test_worker_asks_for_100_ms_time_slices():
    assert time_slice_after_asking(REPO, "a3c") == 100_000_000


def test_learns_cartpole(tmp_path):
    proc, summary = run_script("a3c.py", "--n-workers", 4, "--seed", 1, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    # solved: the mean of 100 consecutive training episodes reached 475 (episodes that the workers finish
    # after the stop signal still count towards train_return_mean100, so it may end a little lower)
    assert summary["solved"] and summary["target_return"] == 475 and summary["train_return_mean100"] > 400, summary
    assert 0 < summary["solved_at_step"] <= summary["global_step"] and not summary["interrupted"]
    # the weights kept when the target was reached: their greedy policy rarely drops far below 475
    assert summary["eval_return_mean"] >= 450, summary
    assert summary["eval_episodes"] == 10

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.dirname(tmp_path / summary["model_path"])).Reload()
    assert {"charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/policy_loss", "losses/value_loss",
            "losses/entropy", "eval/episodic_return"} <= set(events.Tags()["scalars"])

    # the saved checkpoint evaluates alone, without training (and records its episodes where moviepy is installed)
    video = importlib.util.find_spec("moviepy") is not None
    proc = subprocess.run([sys.executable, str(REPO / "a3c.py"), "--eval-checkpoint", summary["model_path"], "--eval-episodes", "3",
                           *(["--capture-video"] if video else [])], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"evaluated {summary['model_path']}: return ") and "over 3 episodes" in proc.stdout
    if video:
        assert len(list((tmp_path / summary["model_path"]).parent.glob("videos/*.mp4"))) == 3


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_runs_under_start_method(tmp_path, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    proc, summary = run_script("a3c.py", "--start-method", method, "--n-workers", 2, "--total-timesteps", 3000, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert summary["global_step"] >= 3000 and summary["episodes"] > 0 and not summary["solved"]
    assert (tmp_path / summary["model_path"]).exists()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")


@pytest.mark.parametrize("method", ["fork", "spawn"])
@linux_only
def test_worker_failure_exits_1(tmp_path, method):
    proc, stderr, seconds = run_with_failing_env("a3c.py", tmp_path, method)
    assert proc.returncode == 1, stderr
    assert seconds < 30
    assert "simulated failure in the environment" in stderr and "worker" in stderr
    assert wait_session_empty(proc.pid) == []  # no worker or multiprocessing helper outlives the run


def _wait_for_run(proc, tmp_path, timeout=60):
    """Block until the run has started writing (its TensorBoard file exists), then let it train a moment."""
    deadline = time.time() + timeout
    while not list(tmp_path.glob("runs/*/events.out.tfevents.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2)


@linux_only
def test_killed_worker_exits_1(tmp_path):
    """A worker that dies without a word (here SIGKILL) is noticed too."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "a3c.py"), "--n-workers", "2", "--total-timesteps", "100000000", "--no-stop-at-target"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _wait_for_run(proc, tmp_path)
        worker = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
        os.kill(worker, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    assert "died with exit code -9" in stderr
    assert wait_session_empty(proc.pid) == []


@linux_only
def test_ctrl_c_saves_and_exits_130(tmp_path):
    proc, stderr, summary = interrupt_run("a3c.py", "--n-workers", 2, "--no-stop-at-target", cwd=tmp_path)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert summary["interrupted"] and summary["global_step"] > 0
    assert (tmp_path / summary["model_path"]).is_file()
    assert wait_session_empty(proc.pid) == []  # the workers stopped too


@pytest.mark.parametrize("args, words", [
    (["--env-id", "NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
    (["--env-id", "Pendulum-v1"], ["Box action space is not supported"]),
    (["--n-workers", "0"], ["--n-workers"]),
    (["--n-steps", "-5"], ["--n-steps"]),
    (["--gamma", "1.5"], ["--gamma"]),
    (["--eval-checkpoint", "missing.pt"], ["missing.pt", "does not exist"]),
])
def test_bad_input_exits_2(tmp_path, args, words):
    proc, _ = run_script("a3c.py", *args, cwd=tmp_path, timeout=60)
    assert_bad_input(proc, "error:", *words)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_capture_video_without_moviepy_exits_2(tmp_path):
    if importlib.util.find_spec("moviepy") is not None:
        pytest.skip("moviepy is installed")
    proc, _ = run_script("a3c.py", "--capture-video", "--total-timesteps", 2000, cwd=tmp_path, timeout=60)
    assert_bad_input(proc, "--capture-video needs moviepy: pip install moviepy")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, env_id, words", [("a2c.py", "CartPole-v1", ["a2c.py"]), ("a3c.py", "Acrobot-v1", ["Acrobot-v1"])])
def test_foreign_checkpoint_exits_2(tmp_path, script, env_id, words):
    torch.save({"script": script, "model": {}, "args": {"env_id": env_id}}, tmp_path / "other.pt")
    proc, _ = run_script("a3c.py", "--eval-checkpoint", "other.pt", cwd=tmp_path, timeout=60)
    assert_bad_input(proc, "error:", *words)
