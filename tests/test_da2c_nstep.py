"""da2c_nstep.py: n-step returns, gradient averaging, replicas, learning (direct, torchrun, two nodes), failures, bad input."""
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import REPO, assert_adam_matches_torch_optim_adam, assert_bad_input, interrupt_run, read_summary, run_script

sys.path.insert(0, str(REPO))
import da2c_nstep as da2c  # noqa: E402

SCRIPT = "da2c_nstep.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # torchrun, from this interpreter


def brute_force_return(rewards, terminated, truncated, final_values, last_values, gamma, t, e):
    """Discounted sum from step t walking forward until the episode or the rollout ends."""
    total, discount = 0.0, 1.0
    for k in range(t, len(rewards)):
        total += discount * rewards[k][e]
        discount *= gamma
        if terminated[k][e]:
            return total
        if truncated[k][e]:
            return total + discount * final_values[k][e]
    return total + discount * last_values[e]


def test_nstep_returns_match_brute_force():
    # env 0: terminates at t=2 and again at the last step; env 1: truncated at t=1, runs on to the end.
    rewards = [[1.0, 2.0], [0.5, -1.0], [2.0, 1.0], [1.0, 3.0], [-2.0, 0.5]]
    terminated = [[False, False], [False, False], [True, False], [False, False], [True, False]]
    truncated = [[False, False], [False, True], [False, False], [False, False], [False, False]]
    final_values = [[0.0, 0.0], [0.0, 7.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    last_values, gamma = [10.0, -4.0], 0.9
    got = da2c.nstep_returns(np.array(rewards, np.float32), np.array(terminated), np.array(truncated),
                             np.array(final_values, np.float32), np.array(last_values, np.float32), gamma)
    for t in range(5):
        for e in range(2):
            want = brute_force_return(rewards, terminated, truncated, final_values, last_values, gamma, t, e)
            assert got[t, e] == pytest.approx(want, abs=1e-5), (t, e)


def test_adam_matches_torch_optim_adam():
    assert_adam_matches_torch_optim_adam(da2c.Adam, lambda: da2c.ActorCritic(4, 2, 16))


def batch(rank, n=12):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g), torch.randn(n, generator=g) * 5


def loss_of(model, obs, actions, returns):
    logits, values = model(obs)
    return da2c.actor_critic_loss(logits, values, actions, returns, vf_coef=0.25, ent_coef=0.01)[0]


def averaged_gradient_rank(rank, world, store_dir, out_dir, poll):
    dist.init_process_group("gloo", store=dist.FileStore(str(Path(store_dir) / "store"), world), rank=rank, world_size=world)
    torch.manual_seed(0)
    model = da2c.ActorCritic(4, 2)
    buf, n_grad = da2c.flat_grad_buffer(list(model.parameters()), 1)
    loss_of(model, *batch(rank)).backward()
    da2c.all_reduce_mean_grads(buf, n_grad, torch.zeros(world, buf.numel()), poll)
    torch.save([p.grad.clone() for p in model.parameters()], Path(out_dir) / f"grad{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("poll", [False, True], ids=["sleeping", "polling"])
def test_averaged_gradient_equals_gradient_of_concatenated_batch(tmp_path, poll):
    world = 2
    mp.start_processes(averaged_gradient_rank, args=(world, tmp_path, tmp_path, poll), nprocs=world, start_method="spawn")
    torch.manual_seed(0)
    model = da2c.ActorCritic(4, 2)
    parts = [batch(rank) for rank in range(world)]
    loss_of(model, *(torch.cat(column) for column in zip(*parts))).backward()
    for rank in range(world):
        averaged = torch.load(tmp_path / f"grad{rank}.pt")
        for got, want in zip(averaged, (p.grad for p in model.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def training_rank(rank, world, store_dir, out_dir):
    os.chdir(out_dir)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(str(Path(store_dir) / "store"), world), rank=rank, world_size=world)
    args = da2c.Args(total_timesteps=6_000, stop_at_target=False, save_model=False, eval_episodes=1)
    da2c.validate(args)
    _, model = da2c.train(rank, world, args, time.time())
    torch.save(model.state_dict(), Path(out_dir) / f"model{rank}.pt")
    dist.destroy_process_group()


def test_replicas_stay_bit_identical(tmp_path):
    world = 2
    mp.start_processes(training_rank, args=(world, tmp_path, tmp_path), nprocs=world, start_method="spawn")
    models = [torch.load(tmp_path / f"model{rank}.pt") for rank in range(world)]
    torch.manual_seed(da2c.Args().seed)
    initial = da2c.ActorCritic(4, 2).state_dict()  # the weights every rank started from
    for name, tensor in models[0].items():
        assert not torch.equal(tensor, initial[name]), name  # it trained
        for other in models[1:]:
            assert torch.equal(tensor, other[name]), name  # bit for bit


def assert_learned(proc, summary):
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert summary["solved"], summary
    assert summary["train_return_mean100"] >= summary["target_return"] == 475
    assert summary["eval_episodes"] == 10 and summary["eval_return_mean"] >= 475, summary  # the greedy policy agrees
    assert summary["global_step"] == summary["solved_at_step"]  # every rank stopped at that update


def test_learns_cartpole_with_two_workers(tmp_path):
    proc, summary = run_script(SCRIPT, "--n-workers", 2, cwd=tmp_path)
    assert_learned(proc, summary)
    proc = subprocess.run([sys.executable, str(REPO / SCRIPT), "--eval-checkpoint", summary["model_path"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # same seed, same greedy policy, same evaluation episodes as at the end of training
    assert f"return {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f} over 10 episodes" in proc.stdout


def test_learns_under_torchrun(tmp_path):
    proc, summary = run_script(SCRIPT, cwd=tmp_path, command=[*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(REPO / SCRIPT)])
    assert_learned(proc, summary)
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


def leftover_processes(marker):
    """Processes whose environment carries `marker` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:
            pass
    return found


FLAKY_ENV = '''
import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

class Flaky(CartPoleEnv):
    """CartPole that raises after 300 steps in the environment seeded 2 (rank 1 with --seed 1)."""
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

gym.register("Flaky-v0", entry_point=Flaky, max_episode_steps=500)
'''


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("launcher", ["direct", "torchrun"])
def test_a_rank_that_raises_ends_the_run_with_exit_1(tmp_path, launcher):
    (tmp_path / "flaky.py").write_text(FLAKY_ENV)
    marker = f"DA2C_TEST_{uuid.uuid4().hex}"
    args = ["--n-envs", "1", "--env-id", "flaky:Flaky-v0", "--target-return", "500"]
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(REPO / SCRIPT), *args] if launcher == "torchrun" else None
    start = time.time()
    proc, _ = run_script(SCRIPT, "--n-workers", 2, *args, cwd=tmp_path, timeout=90, command=command,
                         env={"PYTHONPATH": str(tmp_path), marker: "1"})
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "rank 1" in proc.stderr and "boom" in proc.stderr, proc.stderr
    assert time.time() - start < 60
    time.sleep(0.5)
    assert leftover_processes(marker) == []


def test_ctrl_c_saves_and_exits_130(tmp_path):
    proc, stderr, summary = interrupt_run(SCRIPT, "--n-workers", 2, "--no-stop-at-target", cwd=tmp_path)
    assert proc.returncode == 130, stderr
    assert summary["interrupted"] and summary["global_step"] > 0
    assert (tmp_path / summary["model_path"]).is_file()


@pytest.mark.parametrize("args, words", [
    (["--env-id", "NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
    (["--env-id", "Pendulum-v1"], ["Box action space is not supported", "Discrete"]),
    (["--n-workers", "0"], ["--n-workers"]),
    (["--n-steps", "-1"], ["--n-steps"]),
    (["--total-timesteps", "0"], ["--total-timesteps"]),
    (["--gamma", "1.5"], ["--gamma"]),
    (["--eval-checkpoint", "missing.pt"], ["missing.pt", "does not exist"]),
])
def test_bad_input_exits_2_without_a_run_directory(tmp_path, args, words):
    proc, _ = run_script(SCRIPT, *args, cwd=tmp_path, timeout=60)
    assert_bad_input(proc, "error:", *words)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("checkpoint, words", [
    ({"script": "a2c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, ["not a da2c_nstep.py checkpoint"]),
    ({"script": "da2c_nstep.py", "model": {}, "args": {"env_id": "Acrobot-v1"}}, ["Acrobot-v1"]),
])
def test_foreign_checkpoint_exits_2(tmp_path, checkpoint, words):
    torch.save(checkpoint, tmp_path / "other.pt")
    proc, _ = run_script(SCRIPT, "--eval-checkpoint", tmp_path / "other.pt", cwd=tmp_path, timeout=60)
    assert_bad_input(proc, "error:", *words)
