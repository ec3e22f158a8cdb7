"""Helpers for the tests of the worker scripts (a3c.py, gae.py): the shared optimizer's checks, environments
written to a module on demand (one that fails, one without a reward threshold), a check that a run
left no process behind, the InvertedPendulum run, and the recurrent worker's replay run in this process."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import interrupt_run, kill_launcher, run_script, wait_until_training
from pomdp_cartpole import CartPoleNoVelocity

REPO = Path(__file__).resolve().parent.parent

# Written to `test_envs.py` on PYTHONPATH and passed as `--env-id test_envs:<id>`, so that spawned workers
# (which re-import everything) find them too. FailingCartPole raises after 200 steps per process;
# CartPoleNoThreshold is CartPole-v1 without a reward_threshold in its spec (as Pendulum-v1 has none).
TEST_ENVS = """
import time

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

class FailingCartPole(CartPoleEnv):
    steps = 0

    def step(self, action):
        FailingCartPole.steps += 1
        if FailingCartPole.steps > 200:
            with open("failed_at", "w") as f:  # in the run's working directory
                f.write(str(time.time()))
            raise RuntimeError("simulated failure in the environment")
        return super().step(action)

gym.register("FailingCartPole-v0", entry_point=FailingCartPole, max_episode_steps=500, reward_threshold=475.0)
gym.register("CartPoleNoThreshold-v0", entry_point=CartPoleEnv, max_episode_steps=500)
"""


def write_test_envs(tmp_path):
    """Write the test environments' module into `tmp_path`; return the env for a subprocess that finds it."""
    (tmp_path / "test_envs.py").write_text(textwrap.dedent(TEST_ENVS))
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def _gradients(model, k):
    torch.manual_seed(100 + k)
    return [torch.randn_like(p) for p in model.parameters()]


def _take_steps(model, optimizer, first, last):
    for k in range(first, last):
        for p, g in zip(model.parameters(), _gradients(model, k)):
            p.grad = g
        optimizer.step()


def _shared_and_reference(module):
    """The script's continuous network (log_std included) in shared memory with its SharedAdam, and a private copy
    with torch.optim.Adam."""
    torch.manual_seed(0)
    shared = module.ActorCritic(3, 2, True, (8,)).share_memory()
    reference = module.ActorCritic(3, 2, True, (8,))
    reference.load_state_dict(shared.state_dict())
    return shared, module.SharedAdam(shared.parameters(), lr=1e-2), reference, torch.optim.Adam(reference.parameters(), lr=1e-2)


def _assert_same(shared, shared_opt, reference, reference_opt, steps):
    for p, q in zip(shared.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
        assert shared_opt.state[p]["step"].item() == steps
        for key, value in reference_opt.state[q].items():
            torch.testing.assert_close(shared_opt.state[p][key], value)


def check_shared_adam_matches_torch(module):
    shared, shared_opt, reference, reference_opt = _shared_and_reference(module)
    assert any(p is shared.log_std for p in shared_opt.param_groups[0]["params"])  # the optimizer trains the log-std
    initial = [p.detach().clone() for p in shared.parameters()]
    _take_steps(shared, shared_opt, 0, 5)
    _take_steps(reference, reference_opt, 0, 5)
    # the update wrote into the shared tensors rather than replacing them with private ones
    assert all(t.is_shared() for state in shared_opt.state.values() for t in state.values())
    _assert_same(shared, shared_opt, reference, reference_opt, 5)
    assert all(not torch.equal(p, q) for p, q in zip(shared.parameters(), initial))


def check_spawned_process_advances_shared_adam(module):
    """Steps taken by a spawned process show up in this one (parameters, `step`, moments), and this one continues."""
    shared, shared_opt, reference, reference_opt = _shared_and_reference(module)
    child = torch.multiprocessing.get_context("spawn").Process(target=_take_steps, args=(shared, shared_opt, 0, 3))
    child.start()
    child.join(600)  # a spawned child imports torch afresh: slow on a busy machine
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, child.exitcode
    _take_steps(reference, reference_opt, 0, 3)
    _assert_same(shared, shared_opt, reference, reference_opt, 3)
    _take_steps(shared, shared_opt, 3, 4)
    _take_steps(reference, reference_opt, 3, 4)
    _assert_same(shared, shared_opt, reference, reference_opt, 4)


def check_env_action_clips_to_the_box(module):
    """An unbounded Gaussian sample reaches a Box environment clipped to its bounds (the worker trains on the sample
    itself); a Discrete action as a plain int."""
    box = gym.spaces.Box(np.float32([-0.25, 0.0]), np.float32([0.75, 4.0]))
    np.testing.assert_array_equal(module.env_action(torch.tensor([-3.0, 0.5]), box), np.float32([-0.25, 0.5]))
    np.testing.assert_array_equal(module.env_action(torch.tensor([0.5, 7.0]), box), np.float32([0.5, 4.0]))
    assert module.env_action(torch.tensor(2), gym.spaces.Discrete(3)) == 2


def check_fresh_gradients_on_every_update(module):
    """With SGD(lr=1) each update moves the shared weights by exactly minus this update's gradient.

    Local gradients that pile up would move them by the sum of all gradients so far; a shared `.grad`
    aliased once to the local one would move them by the first gradient again."""
    torch.manual_seed(0)
    local, shared = module.ActorCritic(4, 2, False, (8,)), module.ActorCritic(4, 2, False, (8,)).share_memory()
    opt = torch.optim.SGD(shared.parameters(), lr=1.0)
    x = torch.randn(3, 4)
    for k in range(1, 4):
        loss = (local.actor(x) * k).sum() + (local.critic(x) * k**2).sum()  # a different gradient each update
        expected = torch.autograd.grad(loss, list(local.parameters()), retain_graph=True, allow_unused=True)
        before = [p.detach().clone() for p in shared.parameters()]
        module.push_gradients(local, shared, opt, loss, max_grad_norm=1e9)
        for b, p, g in zip(before, shared.parameters(), expected):
            torch.testing.assert_close(b - p.detach(), g)


def command(script, *args, start_method=None):
    """`python <script> <args>`; with `start_method`, that method is made the default before the script runs as
    __main__ (as the platform's default would be: the scripts take no start-method argument)."""
    if start_method is None:
        return [sys.executable, str(REPO / script), *map(str, args)]
    code = ("import multiprocessing, runpy, sys; multiprocessing.set_start_method(sys.argv[1]); sys.argv = sys.argv[2:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    return [sys.executable, "-c", code, start_method, str(REPO / script), *map(str, args)]


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


def start_run(script, tmp_path, *args, start_method=None):
    """Start `script` in its own session with the test environments importable; return the process."""
    return subprocess.Popen(command(script, *args, start_method=start_method), cwd=tmp_path, env=write_test_envs(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish_run(proc, timeout):
    """Wait for a run started by `start_run`; kill its session if it overruns. Returns its stderr."""
    try:
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def run_with_failing_env(script, tmp_path, start_method):
    """Run `script` with 2 workers on FailingCartPole; return (process, stderr, seconds from the failure to the exit)."""
    proc = start_run(script, tmp_path, "--env-id", "test_envs:FailingCartPole-v0", "--n-workers", 2, start_method=start_method)
    stderr = finish_run(proc, timeout=300)
    return proc, stderr, time.time() - float((tmp_path / "failed_at").read_text())


def kill_a_worker(script, tmp_path):
    """Start a long run, SIGKILL one of its workers once it trains; return (process, stderr)."""
    proc = start_run(script, tmp_path, "--n-workers", 2, "--total-timesteps", 10**8, "--no-stop-at-target")
    wait_until_training(tmp_path, proc, timeout=300)
    worker = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
    os.kill(worker, signal.SIGKILL)
    return proc, finish_run(proc, timeout=120)


def check_killed_main_leaves_no_worker(script, tmp_path):
    """SIGKILL of the main process alone (the OOM killer, `kill -9`): its workers notice within a rollout and exit."""
    left, _ = kill_launcher(script, "--n-workers", 2, "--total-timesteps", 10**8, "--no-stop-at-target", cwd=tmp_path)
    assert left == []


def check_signal_saves_and_exits_128_plus_signal(script, tmp_path, signum, to_group, exit_code):
    """Ctrl-C (SIGINT to the process group), `kill` (SIGTERM to the main process alone) or a scheduler's SIGTERM to
    every process (the workers ignore it): the workers stop, the model and summary are saved, the exit code is
    128 + the signal's number, nothing is left running."""
    proc, stderr, summary = interrupt_run(script, "--n-workers", 2, "--no-stop-at-target", "--total-timesteps", 10**8,
                                          cwd=tmp_path, signum=signum, to_group=to_group)
    assert proc.returncode == exit_code and "Traceback" not in stderr, stderr
    assert summary["interrupted"] and summary["global_step"] > 0 and (tmp_path / summary["model_path"]).is_file()
    assert wait_session_empty(proc.pid) == []


def check_group_sigterm_while_workers_start_saves(script, tmp_path):
    """A scheduler's SIGTERM to every process as soon as the run directory exists, while spawned workers are still
    importing torch, before their first line: main stops them, saves the untrained model and exits 143; no worker
    dies of it."""
    if "spawn" not in mp.get_all_start_methods():
        pytest.skip("spawn is not available here")
    args = "--n-workers", 2, "--no-stop-at-target", "--total-timesteps", 10**8
    proc, stderr, summary = interrupt_run(script, cwd=tmp_path, signum=signal.SIGTERM, to_group=True, settle_s=0,
                                          command=command(script, *args, start_method="spawn"))
    assert proc.returncode == 143 and "died" not in stderr and "Traceback" not in stderr, stderr
    assert summary["interrupted"] and (tmp_path / summary["model_path"]).is_file()
    assert wait_session_empty(proc.pid) == []


def check_runs_budget_without_threshold_under_spawn(script, tmp_path):
    """An env without a reward threshold trains to the budget and exits 0, under spawn too (the workers re-import
    the env's module, as under forkserver)."""
    if "spawn" not in mp.get_all_start_methods():
        pytest.skip("spawn is not available here")
    args = "--env-id", "test_envs:CartPoleNoThreshold-v0", "--n-workers", 2, "--total-timesteps", 3000
    proc, summary = run_script(script, cwd=tmp_path, timeout=600, env=write_test_envs(tmp_path),
                               command=command(script, *args, start_method="spawn"))
    assert proc.returncode == 0, proc.stderr
    assert summary["target_return"] is None and not summary["solved"] and summary["global_step"] >= 3000, summary
    assert summary["episodes"] > 0 and (tmp_path / summary["model_path"]).exists()


def check_learns_inverted_pendulum(script, tmp_path):
    """The Gaussian policy solves InvertedPendulum-v5; its trained log-std and observation statistics are saved."""
    proc, summary = run_script(script, "--env-id", "InvertedPendulum-v5", "--n-workers", 2, "--total-timesteps", 300_000,
                               "--eval-episodes", 3, cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert summary["solved"] and summary["target_return"] == 950 and summary["eval_return_mean"] >= 900, summary
    model = torch.load(tmp_path / summary["model_path"], weights_only=True)["model"]
    # the Gaussian's log-std was trained by the shared optimizer, and the observation statistics were saved
    assert model["log_std"].shape == (1,) and model["log_std"].abs().item() > 1e-3
    assert model["obs_count"].item() >= summary["solved_at_step"] / 2 and model["obs_var"].shape == (4,)


# --lstm: the velocity-free CartPole with a time limit of 20 steps, so that a short run of a worker ends episodes
# both ways (an untrained policy drops the pole after 9 to 40 steps)
gym.register("CartPoleNoVelocity20-v0", entry_point=CartPoleNoVelocity, max_episode_steps=20)


class _Messages(list):
    """The worker's queue to main, kept in a list: one (step, losses, episode) per rollout."""

    def put(self, item):
        self.append(item)

    def cancel_join_thread(self):
        pass


def _recording(method, calls):
    """Wrap ActorCritic.policy or .value to record each call: inputs, outputs and, for the update's value pass,
    the values of the same steps computed one at a time from the same state, as acting computes them."""

    def wrapper(self, obs, state):
        out, new_state = method(self, obs, state)
        record = dict(method=method.__name__, grad=torch.is_grad_enabled(), obs=obs.clone(), state=state.detach().clone(),
                      state_requires_grad=state.requires_grad, new_state=new_state.detach().clone(),
                      out=(out.logits if method.__name__ == "policy" else out).detach().clone())  # Categorical: log-probabilities
        if method.__name__ == "value" and torch.is_grad_enabled():
            with torch.no_grad():
                stepwise, h = [], state
                for o in obs:
                    v, h = method(self, o[None], h)
                    stepwise.append(v[0])
            record["stepwise"] = torch.stack(stepwise)
        calls.append(record)
        return out, new_state

    return wrapper


def run_lstm_worker(module, total_timesteps=400, n_steps=8):
    """Run `module.worker` in this process (rank 0, --lstm) on CartPoleNoVelocity20-v0; return (calls of the network's
    policy and value in order, the messages the worker sent)."""
    args = module.Args(env_id="CartPoleNoVelocity20-v0", lstm=True, hidden=(16,), n_steps=n_steps, total_timesteps=total_timesteps, seed=3)
    torch.manual_seed(0)
    agent = module.ActorCritic(2, 2, False, args.hidden, lstm=True)
    calls, messages, threads = [], _Messages(), torch.get_num_threads()
    patched = [(module.ActorCritic, "policy", _recording(module.ActorCritic.policy, calls)),
               (module.ActorCritic, "value", _recording(module.ActorCritic.value, calls)),
               (module.mp, "parent_process", lambda: type("Alive", (), {"is_alive": lambda self: True})()),
               (module.signal, "signal", lambda *a: None)]  # leave pytest's Ctrl-C alone
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    try:
        for owner, name, value in patched:
            setattr(owner, name, value)
        module.worker(0, args, agent, module.SharedAdam(agent.parameters(), lr=1e-2), mp.Value("q", 0), mp.Value("b", 0, lock=False), messages)
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        torch.set_num_threads(threads)
        torch.distributions.Distribution.set_default_validate_args(True)
    return calls, messages


def rollouts_of(calls):
    """Split the calls into rollouts: the acting steps (policy, no gradient, one observation each), then the update's
    policy pass and value pass over the rollout, then V(s_T) unless the rollout ended in a termination."""
    rollouts = []
    for call in calls:
        if call["method"] == "policy" and not call["grad"]:
            if not rollouts or "replay_value" in rollouts[-1]:
                rollouts.append({"acting": []})
            rollouts[-1]["acting"].append(call)
        elif call["method"] == "policy":
            rollouts[-1]["replay_policy"] = call
        elif "replay_value" not in rollouts[-1]:
            rollouts[-1]["replay_value"] = call
        else:
            rollouts[-1]["bootstrap"] = call
    return rollouts


def check_lstm_replay_and_state(module):
    """With --lstm, across rollouts that end episodes (terminated and truncated) and rollouts that carry on: the update's
    log-probabilities and values equal those of acting; its LSTM state is the one the rollout started with, detached;
    that state is zero at an episode's start and the previous rollout's final state otherwise."""
    calls, messages = run_lstm_worker(module)
    rollouts = rollouts_of(calls)
    assert len(rollouts) == len(messages) and all(len(r["acting"]) == len(r["replay_value"]["obs"]) for r in rollouts)
    ends = {"terminated": 0, "truncated": 0, "carried": 0}
    for i, rollout in enumerate(rollouts):
        acting, policy, value = rollout["acting"], rollout["replay_policy"], rollout["replay_value"]
        # the update's pass starts from the state the rollout started acting with, without its graph
        torch.testing.assert_close(policy["state"], acting[0]["state"], rtol=0, atol=0)
        assert not policy["state_requires_grad"] and not value["state_requires_grad"]
        torch.testing.assert_close(policy["obs"], torch.cat([a["obs"] for a in acting]), rtol=0, atol=0)
        # log-probabilities of every action, recomputed in one pass, against those computed while acting
        torch.testing.assert_close(policy["out"], torch.cat([a["out"] for a in acting]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(policy["new_state"], acting[-1]["new_state"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(value["out"], value["stepwise"], rtol=1e-5, atol=1e-6)
        if "bootstrap" in rollout:  # V(s_T) from the critic's state after the rollout
            torch.testing.assert_close(rollout["bootstrap"]["state"], value["new_state"], rtol=0, atol=0)
        if i == 0 or messages[i - 1][2] is not None:  # the first rollout of an episode starts from zero
            assert not acting[0]["state"].any() and not value["state"].any(), i
        else:  # carried over: the actor's state after the last action, the critic's after the last step (not after s_T)
            ends["carried"] += 1
            torch.testing.assert_close(acting[0]["state"], rollouts[i - 1]["replay_policy"]["new_state"], rtol=0, atol=0)
            torch.testing.assert_close(value["state"], rollouts[i - 1]["replay_value"]["new_state"], rtol=0, atol=0)
            assert acting[0]["state"].abs().min() > 0 and value["state"].abs().min() > 0
        if messages[i][2] is not None:
            ends["truncated" if "bootstrap" in rollout else "terminated"] += 1
    assert min(ends.values()) >= 2, ends
    return rollouts
