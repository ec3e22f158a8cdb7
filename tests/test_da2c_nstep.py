"""da2c_nstep.py: n-step returns, the Gaussian, gradient averaging, replicas and their checksum, learning
(direct, torchrun, two nodes), a slow evaluation, an env without a threshold, failures, bad input.

This module also registers the environments the tests need; a subprocess reaches them as
`--env-id test_da2c_nstep:<Id>` with this folder on PYTHONPATH (gymnasium imports the module first)."""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

from conftest import (REPO, assert_bad_input, assert_gaussian_matches_closed_form, brute_force_returns, interrupt_run, kill_launcher,
                      leftover_processes, read_summary, run_main_in_process, run_script)

sys.path.insert(0, str(REPO))
import da2c_nstep as da2c  # noqa: E402  (importing a script has no side effects)

SCRIPT = "da2c_nstep.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, from this interpreter
TESTS = os.path.dirname(os.path.abspath(__file__))
WITH_TEST_ENVS = {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}


class Flaky(CartPoleEnv):
    """CartPole that raises after 300 steps in the environment seeded 2 (rank 1 with --seed 1 --n-envs 1)."""

    steps, flaky = 0, False

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.flaky = seed == 2
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.steps += 1
        if self.flaky and self.steps > 300:
            raise RuntimeError("boom")
        return super().step(action)


class SlowEvaluation(CartPoleEnv):
    """CartPole whose greedy evaluation (the only reset seeded 100_000 + seed) starts 10 s late."""

    def reset(self, *, seed=None, options=None):
        if seed is not None and seed >= 100_000:
            time.sleep(10)
        return super().reset(seed=seed, options=options)


class UnboundedPendulum(PendulumEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


gym.register("Flaky-v0", entry_point=Flaky, max_episode_steps=500, reward_threshold=475.0)
gym.register("SlowEvaluation-v0", entry_point=SlowEvaluation, max_episode_steps=500, reward_threshold=475.0)
gym.register("NoThreshold-v0", entry_point=CartPoleEnv, max_episode_steps=500)  # a CartPole without reward_threshold
gym.register("UnboundedPendulum-v0", entry_point=UnboundedPendulum, max_episode_steps=200)


def test_nstep_returns_match_brute_force():
    # env 0: terminates at t=2 and again at the last step; env 1: truncated at t=1, runs on to the end.
    rewards = [[1.0, 2.0], [0.5, -1.0], [2.0, 1.0], [1.0, 3.0], [-2.0, 0.5]]
    terminated = [[False, False], [False, False], [True, False], [False, False], [True, False]]
    truncated = [[False, False], [False, True], [False, False], [False, False], [False, False]]
    final_values = [[9.0, 9.0], [9.0, 7.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]  # read only where truncated
    last_values, gamma = [10.0, -4.0], 0.9
    got = da2c.nstep_returns(np.array(rewards, np.float32), np.array(terminated), np.array(truncated),
                             np.array(final_values, np.float32), np.array(last_values, np.float32), gamma)
    masked = [[v if tr else 0.0 for v, tr in zip(*row)] for row in zip(final_values, truncated)]
    want = brute_force_returns(rewards, terminated, truncated, masked, last_values, gamma)
    np.testing.assert_allclose(got, np.array(want, np.float32), rtol=1e-6)


def test_gaussian_matches_closed_form():
    assert_gaussian_matches_closed_form(da2c.gaussian)


def init_group(rank, world, store_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(str(Path(store_dir) / "store"), world), rank=rank, world_size=world)


def recording_rank(rank, world, tmp_path, env_id):
    """One update of train() in which the rank records the batch it computed its loss on, then its averaged gradient."""
    init_group(rank, world, tmp_path)
    batch, forward, loss = [], da2c.ActorCritic.forward, da2c.actor_critic_loss
    da2c.ActorCritic.forward = lambda self, obs: (batch.append(obs) if torch.is_grad_enabled() else None, forward(self, obs))[1]
    da2c.actor_critic_loss = lambda policy, values, actions, returns, *coefs: (batch.extend([actions, returns]), loss(policy, values, actions, returns, *coefs))[1]
    args = da2c.Args(env_id=env_id, n_envs=3, n_steps=4, total_timesteps=world * 3 * 4, max_grad_norm=1e9)  # no clipping
    da2c.validate(args)
    model, _ = da2c.train(args, rank, world, time.time())
    torch.save({"batch": batch, "grads": [p.grad.clone() for p in model.parameters()]}, tmp_path / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_averaged_gradient_equals_gradient_over_all_ranks_batches(tmp_path, env_id):
    world = 2
    mp.start_processes(recording_rank, args=(world, tmp_path, env_id), nprocs=world, start_method="spawn")
    records = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]
    obs, actions, returns = (torch.cat(parts) for parts in zip(*(record["batch"] for record in records)))
    assert len(obs) == world * 3 * 4 and not torch.equal(obs[:12], obs[12:])  # the ranks played different episodes
    env, args = gym.make(env_id), da2c.Args(env_id=env_id)
    da2c.validate(args)  # the defaults of the env's kind of action space
    torch.manual_seed(args.seed)
    model = da2c.ActorCritic(env.observation_space.shape[0], env.action_space)  # the weights every rank started from
    da2c.actor_critic_loss(*model(obs), actions, returns, args.vf_coef, args.ent_coef)[0].backward()
    for record in records:
        for got, want in zip(record["grads"], (p.grad for p in model.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)  # float32 sums in another order


def training_rank(rank, world, tmp_path, nudge):
    """Train 200 updates; with `nudge`, rank 1 moves one weight by 1e-3 after its 50th step."""
    init_group(rank, world, tmp_path)
    sys.stderr = open(tmp_path / f"stderr{rank}.txt", "w")
    step, steps = torch.optim.Adam.step, []

    def nudged_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        steps.append(1)
        if nudge and rank == 1 and len(steps) == 50:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] += 1e-3
        return result

    torch.optim.Adam.step = nudged_step
    args = da2c.Args(env_id="Pendulum-v1", n_envs=1, n_steps=4, total_timesteps=200 * world * 1 * 4)
    da2c.validate(args)
    model, _ = da2c.train(args, rank, world, time.time())
    torch.save(model.state_dict(), tmp_path / f"model{rank}.pt")
    sys.stderr.close()
    dist.destroy_process_group()


@pytest.mark.parametrize("nudge", [False, True], ids=["same-kernels", "one-rank-nudged"])
def test_replicas_stay_bit_identical_and_a_difference_is_reported_once(tmp_path, nudge):
    world = 2
    mp.start_processes(training_rank, args=(world, tmp_path, nudge), nprocs=world, start_method="spawn")
    models = [torch.load(tmp_path / f"model{rank}.pt") for rank in range(world)]
    env = gym.make("Pendulum-v1")
    torch.manual_seed(da2c.Args.seed)
    initial = da2c.ActorCritic(env.observation_space.shape[0], env.action_space)
    for name, tensor in initial.state_dict().items():
        assert not torch.equal(tensor, models[0][name]), name  # it trained (and the observation sums grew)
    # bit for bit; a nudged weight stays apart, while every other one still takes the same averaged step
    nudged = next(iter(initial.named_parameters()))[0]  # the optimizer's first parameter
    assert [name for name in models[0] if not torch.equal(models[0][name], models[1][name])] == ([nudged] if nudge else [])
    warnings = (tmp_path / "stderr0.txt").read_text().count("warning: the replicas differ at update 100")
    assert warnings == (1 if nudge else 0)  # checked at updates 100 and 200, reported once
    assert "warning" not in (tmp_path / "stderr1.txt").read_text()  # rank 0 alone reports


def assert_learned(proc, summary, target):
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert summary["solved"] and summary["target_return"] == target, summary
    assert summary["train_return_mean100"] >= target
    assert summary["eval_episodes"] == 10 and summary["eval_return_mean"] >= target, summary  # the greedy policy agrees
    assert summary["global_step"] == summary["solved_at_step"]  # every rank stopped at that update
    assert Path(summary["model_path"]).name == "da2c_nstep.pt"


def test_learns_cartpole_with_defaults_and_evaluates_its_checkpoint(tmp_path):
    proc, summary = run_script(SCRIPT, cwd=tmp_path)
    assert_learned(proc, summary, 475)
    proc = subprocess.run([sys.executable, str(REPO / SCRIPT), "--eval-checkpoint", summary["model_path"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # same seed, same greedy policy with its saved observation statistics, same episodes as after training
    assert f"return {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f} over 10 episodes" in proc.stdout


def test_learns_inverted_pendulum_with_defaults(tmp_path):
    proc, summary = run_script(SCRIPT, "--env-id", "InvertedPendulum-v5", "--total-timesteps", 300_000, cwd=tmp_path)
    assert_learned(proc, summary, 950)
    checkpoint = torch.load(tmp_path / summary["model_path"])
    assert checkpoint["model"]["obs_sums"][0, 0] > summary["global_step"]  # the normalization statistics were saved


def test_learns_under_torchrun(tmp_path):
    proc, summary = run_script(SCRIPT, cwd=tmp_path, command=[*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(REPO / SCRIPT)])
    assert_learned(proc, summary, 475)
    assert (tmp_path / summary["model_path"]).is_file()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_nodes_form_one_group_and_train(tmp_path):
    args = ["--total-timesteps", "24000", "--no-stop-at-target", "--eval-episodes", "2"]
    port, nodes = free_port(), []
    for node_rank in (0, 1):
        cwd = tmp_path / f"node{node_rank}"
        cwd.mkdir()
        command = [*TORCHRUN, "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1",
                   "--rdzv-endpoint", f"127.0.0.1:{port}", str(REPO / SCRIPT), *args]
        nodes.append(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=180) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, (out, err[-3000:])
    assert read_summary(tmp_path / "node1") is None  # only global rank 0 writes
    summary = read_summary(tmp_path / "node0")
    assert summary["global_step"] == 24_000
    assert summary["train_return_mean100"] > 100, summary  # a uniform random policy averages ~22
    # the two-node group is the same computation as two local ranks, to the bit
    _, local = run_script(SCRIPT, "--n-workers", 2, *args, cwd=tmp_path / "local")
    for key in ("wall_time_s", "sps", "model_path", "solved_at_s"):
        summary.pop(key), local.pop(key)
    assert summary == local


def test_a_slow_evaluation_is_not_bounded_by_the_peers_timeout(tmp_path):
    start = time.time()
    proc, summary = run_script(SCRIPT, "--env-id", "test_da2c_nstep:SlowEvaluation-v0", "--timeout-s", 5, "--total-timesteps", 3200,
                               "--eval-episodes", 2, cwd=tmp_path, env=WITH_TEST_ENVS, timeout=120)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert time.time() - start > 10 and summary["wall_time_s"] > 10  # the evaluation outlasted --timeout-s
    assert summary["eval_episodes"] == 2 and summary["global_step"] == 3200 and not summary["interrupted"]
    assert (tmp_path / summary["model_path"]).is_file()


def test_an_env_without_a_reward_threshold_trains_its_budget(tmp_path):
    proc, summary = run_script(SCRIPT, "--env-id", "test_da2c_nstep:NoThreshold-v0", "--total-timesteps", 10_000,
                               "--eval-episodes", 1, cwd=tmp_path, env=WITH_TEST_ENVS, timeout=120)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert summary["target_return"] is None and not summary["solved"] and summary["solved_at_step"] is None
    assert summary["global_step"] >= 10_000 and summary["episodes"] > 100  # past the 100th episode, where it crashed
    assert (tmp_path / summary["model_path"]).is_file()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("launcher", ["direct", "torchrun"])
def test_a_rank_that_raises_ends_the_run_with_exit_1(tmp_path, launcher):
    marker = f"DA2C_TEST_{uuid.uuid4().hex}"
    args = ["--n-envs", "1", "--env-id", "test_da2c_nstep:Flaky-v0", "--timeout-s", "600"]  # a hang would show
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(REPO / SCRIPT), *args] if launcher == "torchrun" else None
    start = time.time()
    proc, _ = run_script(SCRIPT, "--n-workers", 2, *args, cwd=tmp_path, timeout=300, command=command,
                         env={**WITH_TEST_ENVS, marker: "1"})
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    # the failing rank names itself: the launcher's report may name rank 0, whose all_reduce lost its peer first
    assert "error: rank 1 failed: RuntimeError('boom')" in proc.stderr, proc.stderr
    assert time.time() - start < 150  # not the 600 s a rank left waiting in the collective would take
    time.sleep(0.5)
    assert leftover_processes(marker) == []


def test_ctrl_c_saves_and_exits_130(tmp_path):
    proc, stderr, summary = interrupt_run(SCRIPT, "--n-workers", 2, "--no-stop-at-target", cwd=tmp_path)
    assert proc.returncode == 130, stderr
    assert summary["interrupted"] and summary["global_step"] > 0 and summary["eval_episodes"] == 0
    assert (tmp_path / summary["model_path"]).is_file()
    saved = max(p.stat().st_mtime for p in tmp_path.glob("runs/*/summary.json"))
    assert time.time() - saved < 20  # the run ended once saved, not after torch's launcher's 30 s shutdown timeout


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("launcher, signum, to_group", [("direct", signal.SIGKILL, False), ("torchrun", signal.SIGKILL, False),
                                                       ("direct", signal.SIGTERM, False), ("direct", signal.SIGTERM, True),
                                                       ("torchrun", signal.SIGTERM, False)])
def test_a_killed_launcher_leaves_no_rank_behind_and_the_run_is_saved(tmp_path, launcher, signum, to_group):
    # direct: elastic_launch's ranks, which would wait forever for their launcher to read their exit codes (SIGKILL),
    # or which it would kill unsaved (SIGTERM, if it handled it); torchrun's ranks run in sessions of their own, and
    # nothing else would stop them before their budget. SIGTERM to the whole group (a scheduler's) and torchrun's
    # forwarded SIGTERM reach the ranks themselves, which stop and save as on Ctrl-C.
    args = ["--no-stop-at-target", "--total-timesteps", 10**8]
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(REPO / SCRIPT), *map(str, args)] if launcher == "torchrun" else None
    left, summary = kill_launcher(SCRIPT, "--n-workers", 2, *args, cwd=tmp_path, command=command, signum=signum, to_group=to_group)
    assert left == []
    assert summary["interrupted"] and summary["global_step"] > 0 and (tmp_path / summary["model_path"]).is_file()


BAD_INPUT = [
    (["--env-id", "NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
    (["--env-id", "test_da2c_nstep:UnboundedPendulum-v0"], ["not supported", "finite bounds"]),
    (["--env-id", "Blackjack-v1"], ["Blackjack-v1", "flat Box"]),
    (["--n-workers", "0"], ["--n-workers"]),
    (["--n-steps", "-1"], ["--n-steps"]),
    (["--total-timesteps", "0"], ["--total-timesteps"]),
    (["--gamma", "1.5"], ["--gamma"]),
    (["--eval-checkpoint", "missing.pt"], ["missing.pt", "No such file"]),
]


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_bad_input_exits_2_without_a_run_directory(tmp_path, monkeypatch, capsys, args, words):
    proc = run_main_in_process(da2c, monkeypatch, capsys, tmp_path, *args)
    assert_bad_input(proc, "error:", *words)
    assert not (tmp_path / "runs").exists()


def test_bad_input_exits_2_as_a_process(tmp_path):
    proc, _ = run_script(SCRIPT, *BAD_INPUT[1][0], cwd=tmp_path, timeout=60, env=WITH_TEST_ENVS)
    assert_bad_input(proc, "error:", *BAD_INPUT[1][1])


@pytest.mark.parametrize("checkpoint, words", [
    ({"script": "a2c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, ["not a da2c_nstep.py checkpoint"]),
    ({"script": "da2c_nstep.py", "model": {}, "args": {"env_id": "Acrobot-v1"}}, ["Acrobot-v1"]),
])
def test_foreign_checkpoint_exits_2(tmp_path, monkeypatch, capsys, checkpoint, words):
    torch.save(checkpoint, tmp_path / "other.pt")
    proc = run_main_in_process(da2c, monkeypatch, capsys, tmp_path, "--eval-checkpoint", tmp_path / "other.pt")
    assert_bad_input(proc, "error:", *words)
