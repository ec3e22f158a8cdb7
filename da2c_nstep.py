"""Distributed advantage actor-critic (DA2C) with n-step returns: synchronous, on torch.distributed.

Every rank (process) holds a replica of one two-headed actor-critic network and its own
environments. Each update every rank plays `--n-steps` steps in each of its `--n-envs`
environments, computes n-step bootstrapped returns and the actor-critic loss on that experience,
the gradients are averaged over all ranks with one collective, and every rank takes the same Adam
step, so the replicas stay bit-identical. This is the distributed training of the seed chapter
("Tackling more complex problems with actor-critic methods", Zai & Brown, Deep Reinforcement
Learning in Action, ch. 5) made synchronous; the n-step actor-critic is A3C's (Mnih et al. 2016,
https://arxiv.org/abs/1602.01783) without the asynchrony.

    python da2c_nstep.py                                    # 2 local ranks, CartPole-v1 until solved
    python da2c_nstep.py --n-workers 8                      # spawns 8 local processes
    torchrun --standalone --nproc-per-node 8 da2c_nstep.py  # the same, launched by torchrun
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 \\
             --rdzv-endpoint HOST:29500 da2c_nstep.py       # two machines: R = 0 on HOST, 1 on the other
    python da2c_nstep.py --eval-checkpoint runs/.../da2c_nstep.pt

Started directly, the script spawns `--n-workers` ranks on this machine around a rendezvous store on
loopback; under torchrun it joins torchrun's group and `--n-workers` is ignored (wall_time_s then
counts from each rank's start). The backend is gloo: this small MLP acting on one observation at a
time is faster on the CPU, so there is no nccl path. Rank 0 alone logs, draws the progress,
evaluates and saves; stopping needs no message, as every rank sees the same gathered episodes and
so stops at the same update. A rank that fails ends the run with exit code 1: the launcher (ours or
torchrun's) stops the other ranks at once, and a rank left waiting in the collective for a rank on
another machine gives up after `--timeout-s`.

Siblings: `a2c.py` is the same synchronous algorithm with vectorized environments in one process;
`a3c.py` and `gae.py` run asynchronous Hogwild workers on a model in shared memory (one machine).
This file is the multi-process, multi-machine one: its only channel between ranks is one
all-gather per update.

The seed's listings are broken (`j` never defined, values/log-probs/rewards never stored, `G` taken
from the value of the state *before* the last step, one `done` for failure and time limit). Here:
R_T = V(s_T) of the state after the rollout; a terminated step cuts the return, a truncated one
bootstraps from V(final observation).

The seed's other choices were measured on CartPole-v1: steps until the mean of the last 100
training episodes reaches 475, 400k-step budget, lr 1e-3, no entropy bonus, critic coefficient
0.5 unless said (these comparisons came before 0.1 was chosen). To spare the shared 2-core machine,
"2 ranks x k envs" was run as one rank with 2k envs, which takes the same update (the
gradient-averaging test checks this); for 2 x 2 envs:
`python da2c_nstep.py --n-workers 1 --n-envs 4 --learning-rate 1e-3 --seed S`.
- critic loss coefficient 0.1 (the seed's clc): kept, `--vf-coef 0.1`. 2 x 2 envs, seeds 1-5:
  118k-140k steps (median 127k) against 129k-145k (median 134k) with 0.5.
- critic head detached from the trunk: dropped. 2 x 4 envs, seeds 1-3: one seed solved
  (228k), two did not; attached, all three solved (209k-216k).
- reward -10 on a terminating step: dropped; it gained nothing here (2 x 2 envs, seeds 1-3:
  125k-156k against 134k-145k; 2 x 4 envs: 197k-206k against 209k-216k) and is wrong for tasks
  where terminating is the goal.
- returns L2-normalized over the batch (`F.normalize`): dropped. 2 x 4 envs, seeds 1-3: two solved,
  at 351k and 371k steps, against 209k-216k.
- one environment per worker: dropped. 1 per rank: 134k-250k steps (seeds 1-3), and fewer steps
  per second; 4 per rank: 209k-231k (seeds 1-5, lr 1e-3). How many per rank: below.
Not from the seed: an entropy bonus of 0.01 (A3C's; 2 x 4 envs) left seeds 1-3 at a return(100)
of about 395 after 400k steps. With vf 0.1 and 2 x 2 envs, lr 2e-3 solved seeds 1-10 in 69k-292k
steps, 3e-3 collapsed on seed 3, 1.5e-3 took 95k-200k (seeds 1-5).
Time to solve is what the defaults are chosen for, and here the collective sets the pace: on this
2-core machine a gloo all-reduce over loopback took 1.3 ms per call with both ranks idle and 2.5 ms
with both busy, whatever the buffer's size, against 0.13 ms with one rank (the all-gather now used:
0.5 ms idle, 1.6-2.1 ms after 3 ms of work). 8 envs per rank do four times the work of 2 per update
for one collective, and the larger batch (160 steps with 2 ranks) takes lr 3e-3. 16 envs per rank
solved in about the same time (seeds 1-5: 7.7-13.7 s against 8.9-12.1 s) but took more steps
(142k-386k against 135k-224k), and at lr 5e-3 one seed in five did not solve.
Seconds to solve (from the script's start, two real ranks, seeds 1-5): 2 x 8 envs at 3e-3: 11.5,
9.6, 13.5, 14.6, 10.1 (135k-224k steps, 12.8k-15.0k steps/s); 2 x 4 at 3e-3: 12.3, 10.4, 11.7, 11.2,
14.1 (77k-117k steps, 7-8k steps/s); 2 x 8 envs with 5 steps at 2e-3: 13.0-16.3. The former
defaults, 2 x 2 envs at 1e-3, solved at 107k-174k steps at 5-6k steps/s: a median of 24.3 s from
launch in benchmarks/cartpole.py. The greedy evaluation returned 500 for every one of these seeds.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "torch==2.13.0",
#     "gymnasium[classic-control]==1.4.0",
#     "numpy==2.4.6",
#     "tyro==1.0.17",
#     "tensorboard==2.21.0",
#     "rich==15.0.0",
# ]
# ///
import json
import math
import os
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of this experiment (the run directory and the checkpoint are named after it)"""
    seed: int = 1
    """seed of the experiment: the initial weights; rank r samples actions with seed + r and seeds
    its environment i with seed + r * n_envs + i"""
    torch_deterministic: bool = True
    """sets `torch.backends.cudnn.deterministic`"""
    capture_video: bool = False
    """record the greedy evaluation episodes to `videos/` (needs moviepy)"""
    save_model: bool = True
    """save the model to the run directory"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model greedily instead of training"""
    eval_episodes: int = 10
    """greedy evaluation episodes after training"""

    env_id: str = "CartPole-v1"
    """gymnasium id of an environment with a flat Box observation and a Discrete action space"""
    total_timesteps: int = 500_000
    """environment steps of all ranks together"""
    n_workers: int = 2
    """local processes (ranks) to spawn; ignored under torchrun"""
    n_envs: int = 8
    """environments each rank steps in turn (the seed: 1)"""
    n_steps: int = 10
    """steps per environment per update, the N of n-step returns"""
    learning_rate: float = 3e-3
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.1
    """critic loss coefficient (the seed's clc)"""
    max_grad_norm: float = 0.5
    """clip the averaged gradient to this norm"""
    hidden_size: int = 64
    """width of the trunk's two hidden layers and of the critic head's hidden layer"""
    target_return: Optional[float] = None
    """mean return of the last 100 training episodes that counts as solved (default: the env spec's)"""
    stop_at_target: bool = True
    """stop training once the target is reached"""
    timeout_s: float = 60.0
    """seconds a collective waits for a missing rank before the run fails"""


class BadInput(Exception):
    """A user error: reported as one line and exit code 2."""


class PeerLost(Exception):
    """The update's collective failed because another rank is gone."""


def nstep_returns(rewards, terminated, truncated, final_values, last_values, gamma):
    """n-step bootstrapped returns over a [T, E] rollout, computed backwards:
    R_t = r_t + gamma * (1 - terminated_t) * (V(final obs_t) if truncated_t else R_{t+1}),
    with R_T = V(s_T), the value of the state after the rollout."""
    returns = np.zeros_like(rewards)
    next_return = last_values
    for t in reversed(range(len(rewards))):
        next_value = np.where(truncated[t], final_values[t], next_return)
        next_return = rewards[t] + gamma * ~terminated[t] * next_value
        returns[t] = next_return
    return returns


def actor_critic_loss(logits, values, actions, returns, vf_coef, ent_coef):
    """Mean over the batch of -log pi(a|s) (R - V(s)) + vf_coef (R - V(s))^2 - ent_coef H(pi(.|s))."""
    log_probs = F.log_softmax(logits, dim=-1)
    advantages = returns - values.detach()
    policy_loss = -(log_probs.gather(1, actions[:, None]).squeeze(1) * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    return policy_loss + vf_coef * value_loss - ent_coef * entropy, (policy_loss, value_loss, entropy)


def layer_init(layer, std=np.sqrt(2)):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """The seed's two-headed model: a shared trunk, an actor head (logits) and a critic head with
    its own hidden layer (the seed's l3). Unlike the seed, the critic's gradient reaches the trunk."""

    def __init__(self, obs_dim, n_actions, hidden=64):
        super().__init__()
        self.trunk = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)), nn.Tanh())
        self.actor = layer_init(nn.Linear(hidden, n_actions), std=0.01)
        self.critic = nn.Sequential(
            layer_init(nn.Linear(hidden, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, 1), std=1.0))

    def forward(self, x):
        h = self.trunk(x)
        return self.actor(h), self.critic(h).squeeze(-1)


class Adam:
    """Adam (Kingma & Ba 2015, https://arxiv.org/abs/1412.6980) written out: torch.optim imports
    torch._dynamo on first use, 1.2 s of start-up, a tenth of the time this script takes to solve
    CartPole. The same update as torch.optim.Adam, in the same order (tests/test_da2c_nstep.py checks it)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        self.steps += 1
        bias_correction1, bias_correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avgs, self.exp_avg_sqs):
            exp_avg.lerp_(param.grad, 1 - beta1)  # m = beta1 m + (1 - beta1) g
            exp_avg_sq.mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
            # theta -= lr * (m / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
            denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-self.lr / bias_correction1)


# Gradients are averaged explicitly rather than with DistributedDataParallel: they live in one flat
# buffer, and the same buffer carries the rank's finished episodes and its stop flag, so one collective
# per update is all the communication there is. DDP would hide the averaging in backward hooks and
# need a second collective for the episodes. The collective is an all-gather, with the sum done on
# every rank: gloo's all_reduce took 1.2-1.8 ms per call between two ranks on loopback, its all-gather
# 0.48 ms (500 calls on a 9,000-float tensor, 2 cores), and here that latency sets the pace.
def flat_grad_buffer(params, n_extra):
    """A zeroed flat tensor whose first part backs every p.grad (backward() accumulates straight
    into it), followed by n_extra slots. Returns it and the number of gradient entries."""
    n_grad = sum(p.numel() for p in params)
    buf, offset = torch.zeros(n_grad + n_extra), 0
    for p in params:
        p.grad = buf[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return buf, n_grad


def all_reduce_mean_grads(buf, n_grad, gathered, poll=False):
    """All-reduce by all-gather: gathered[r] becomes rank r's buf, then the gradient part of buf
    becomes the mean g = (1/W) sum_r g_r, the gradient of the mean loss over all ranks' samples (every
    rank's batch has the same size). Every rank adds the same rows in rank order, so all get the same bits.
    With `poll`, the rank waits for the collective by polling it and yielding its core instead of sleeping
    (see own_core)."""
    work = dist.all_gather_single(gathered.view(-1), buf, async_op=poll)
    while poll and not work.is_completed():
        os.sched_yield()
    if poll:
        work.wait()  # raises if the collective failed
    grads = buf[:n_grad]
    grads.copy_(gathered[0, :n_grad])
    for rank_buf in gathered[1:]:
        grads += rank_buf[:n_grad]
    grads /= gathered.shape[0]


def validate(args):
    """Raise BadInput for anything the run cannot handle, before any process or file is created."""
    for name in ("total_timesteps", "n_workers", "n_envs", "n_steps", "eval_episodes", "hidden_size"):
        if getattr(args, name) <= 0:
            raise BadInput(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        raise BadInput(f"--gamma must be in (0, 1], got {args.gamma}")
    if min(args.learning_rate, args.max_grad_norm, args.timeout_s) <= 0:
        raise BadInput("--learning-rate, --max-grad-norm and --timeout-s must be positive")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes through it)
        except ImportError:
            raise BadInput("--capture-video needs moviepy: pip install moviepy") from None
    try:
        env = gym.make(args.env_id)
    except (gym.error.Error, ModuleNotFoundError) as e:
        raise BadInput(f"cannot make environment {args.env_id!r}: {e}") from None
    env.close()
    if not isinstance(env.action_space, gym.spaces.Discrete):
        space = type(env.action_space).__name__
        raise BadInput(f"{args.env_id}: {space} action space is not supported (Discrete actions only)")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise BadInput(f"{args.env_id} has observations {env.observation_space}; da2c_nstep.py needs a flat Box")
    if args.target_return is None:
        args.target_return = env.spec.reward_threshold


def load_checkpoint(path, env_id):
    if not os.path.isfile(path):
        raise BadInput(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    script = ckpt.get("script") if isinstance(ckpt, dict) else None
    if script != Path(__file__).name:
        raise BadInput(f"{path} is not a {Path(__file__).name} checkpoint (script: {script})")
    trained_on = ckpt.get("args", {}).get("env_id")
    if trained_on != env_id:
        raise BadInput(f"{path} was trained on {trained_on}, not {env_id} (pass --env-id {trained_on})")
    return ckpt


def build_model(env_id, hidden_size):
    env = gym.make(env_id)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n, hidden_size)
    env.close()
    return model


def evaluate(model, env_id, episodes, seed, video_dir=None):
    """Returns of `episodes` greedy (argmax) episodes."""
    env = gym.make(env_id, render_mode="rgb_array" if video_dir else None)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, disable_logger=True)
    returns, ep_return = [], 0.0
    obs, _ = env.reset(seed=seed)
    while len(returns) < episodes:
        with torch.no_grad():
            action = model(torch.as_tensor(obs, dtype=torch.float32))[0].argmax().item()
        obs, reward, terminated, truncated, _ = env.step(action)
        ep_return += float(reward)
        if terminated or truncated:
            returns.append(ep_return)
            ep_return = 0.0
            obs, _ = env.reset()
    env.close()
    return returns


class Progress:
    """A live bar on a terminal; one plain line every 10 s otherwise (logs, CI)."""

    def __init__(self, total: int):
        self.bar = None
        self.last_print = time.time()
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
            self.task = self.bar.add_task("train", total=total, stats="")
            self.bar.start()

    def update(self, step: int, sps: int, mean_return: float):
        stats = f"SPS {sps}  return(100) {mean_return:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)
        elif time.time() - self.last_print >= 10:
            print(f"step {step}  {stats}", flush=True)
            self.last_print = time.time()

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def train(rank, world, args, t0, poll=False):
    """One rank's training loop, inside an initialized process group. Returns the exit code
    (0, or 130 after Ctrl-C) and the trained replica."""
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.manual_seed(args.seed)
    model = build_model(args.env_id, args.hidden_size)
    params = list(model.parameters())
    for p in params:  # the same seed already gives the same weights; this makes it so across machines too
        dist.broadcast(p.data, src=0)
    rng = np.random.default_rng(args.seed + rank)  # action sampling differs per rank

    max_episodes = args.n_envs * args.n_steps  # at most one episode ends per environment step
    buf, n_grad = flat_grad_buffer(params, max_episodes * 2 + 1)
    grads, episodes, stop_flag = buf[:n_grad], buf[n_grad:-1].view(max_episodes, 2), buf[-1:]
    gathered = torch.zeros(world, buf.numel())  # every rank's buf, in rank order
    optimizer = Adam(params, lr=args.learning_rate)

    T, E = args.n_steps, args.n_envs
    envs = [gym.make(args.env_id) for _ in range(E)]
    obs = np.stack([env.reset(seed=args.seed + rank * E + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    obs_buf, final_obs = np.zeros((T, *obs.shape), np.float32), np.zeros((T, *obs.shape), np.float32)
    actions, rewards = np.zeros((T, E), np.int64), np.zeros((T, E), np.float32)
    terminated, truncated = np.zeros((T, E), bool), np.zeros((T, E), bool)
    ep_return, ep_length = [0.0] * E, [0] * E

    recent = deque(maxlen=100)  # the last 100 episodes of all ranks, identical on every rank
    global_step, update, episode_count, solved_at_step, solved_at_s = 0, 0, 0, None, None
    steps_per_update = world * T * E
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path("runs") / f"{args.env_id}__{args.exp_name}__{args.seed}__{int(t0)}"
        writer = SummaryWriter(str(run_dir))
        table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        progress = Progress(args.total_timesteps)
    while True:
        finished = []
        for t in range(T):
            obs_buf[t] = obs
            with torch.no_grad():
                probs = model.actor(model.trunk(torch.from_numpy(obs))).softmax(-1).numpy()
            # inverse-CDF sampling, a = #{k < n-1 : u > P(A <= k)} with u ~ U(0, 1): cheaper than
            # torch.distributions for a few rows
            actions[t] = (rng.random((E, 1)) > probs.cumsum(1)[:, :-1]).sum(1)
            for e, env in enumerate(envs):
                next_obs, reward, term, trunc, _ = env.step(int(actions[t, e]))
                ep_return[e] += float(reward)
                ep_length[e] += 1
                rewards[t, e], terminated[t, e], truncated[t, e] = reward, term, trunc and not term
                if term or trunc:
                    final_obs[t, e] = next_obs
                    finished.append((ep_return[e], ep_length[e]))
                    ep_return[e], ep_length[e] = 0.0, 0
                    next_obs, _ = env.reset()
                obs[e] = next_obs

        # One forward pass: the rollout (with gradients), V(s_T) and V(final obs) of truncated steps.
        logits, values = model(torch.from_numpy(np.concatenate([obs_buf.reshape(T * E, -1), obs, final_obs[truncated]])))
        bootstrap = values[T * E :].detach().numpy()
        final_values = np.zeros((T, E), np.float32)
        final_values[truncated] = bootstrap[E:]
        returns = nstep_returns(rewards, terminated, truncated, final_values, bootstrap[:E], args.gamma)
        buf.zero_()
        loss, (policy_loss, value_loss, entropy) = actor_critic_loss(
            logits[: T * E], values[: T * E], torch.from_numpy(actions.reshape(-1)), torch.from_numpy(returns.reshape(-1)),
            args.vf_coef, args.ent_coef)
        loss.backward()
        if finished:
            episodes[: len(finished)] = torch.tensor(finished)
        stop_flag.fill_(bool(interrupted))
        try:
            all_reduce_mean_grads(buf, n_grad, gathered, poll)  # also gathers everyone's episodes and stop requests
        except RuntimeError as e:  # a peer died or left; that rank reports its own error
            raise PeerLost(str(e).splitlines()[0]) from None
        grad_norm = grads.norm()  # clip the averaged gradient: g * min(1, max_norm / |g|)
        if grad_norm > args.max_grad_norm:
            grads *= args.max_grad_norm / grad_norm
        optimizer.step()
        update += 1
        global_step += steps_per_update

        all_episodes = gathered[:, n_grad:-1].view(world, max_episodes, 2)
        finished_all = all_episodes[all_episodes[..., 1] > 0].tolist()  # rank order, then finishing order
        episode_count += len(finished_all)
        recent.extend(episode_return for episode_return, _ in finished_all)
        mean100 = sum(recent) / len(recent) if recent else None
        if solved_at_step is None and len(recent) == 100 and mean100 >= args.target_return:
            solved_at_step, solved_at_s = global_step, time.time() - t0
        stop_requested = gathered[:, -1].sum().item() > 0
        stop = ((solved_at_step is not None and args.stop_at_target) or stop_requested
                or global_step >= args.total_timesteps)
        if rank == 0:
            for episode_return, episode_length in finished_all:
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_length", episode_length, global_step)
            sps = int(global_step / (time.time() - t0))
            if update % 100 == 0 or stop:
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
                writer.add_scalar("losses/value_loss", value_loss.item(), global_step)
                writer.add_scalar("losses/entropy", entropy.item(), global_step)
            if update % 20 == 0 or stop:
                progress.update(global_step, sps, mean100 or 0.0)
        if stop:
            break
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C must not cut the save short
    for env in envs:
        env.close()
    was_interrupted = stop_requested
    if rank == 0:
        progress.close()
        eval_returns = []
        if not was_interrupted:
            video_dir = run_dir / "videos" if args.capture_video else None
            eval_returns = evaluate(model, args.env_id, args.eval_episodes, args.seed + 100_000, video_dir)
            for i, r in enumerate(eval_returns):
                writer.add_scalar("eval/episodic_return", r, i)
        model_path = None
        if args.save_model:
            model_path = run_dir / f"{args.exp_name}.pt"
            tmp = model_path.with_suffix(".tmp")
            torch.save({"script": Path(__file__).name, "model": model.state_dict(), "args": vars(args)}, tmp)
            os.replace(tmp, model_path)
        wall = time.time() - t0
        summary = {
            "script": Path(__file__).name, "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
            "episodes": episode_count, "wall_time_s": round(wall, 3), "sps": int(global_step / wall),
            "target_return": args.target_return, "solved": solved_at_step is not None, "solved_at_step": solved_at_step,
            "solved_at_s": None if solved_at_s is None else round(solved_at_s, 3), "train_return_mean100": mean100,
            "eval_return_mean": float(np.mean(eval_returns)) if eval_returns else None,
            "eval_return_std": float(np.std(eval_returns)) if eval_returns else None,
            "eval_episodes": len(eval_returns), "model_path": str(model_path) if model_path else None,
            "interrupted": was_interrupted,
        }
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, run_dir / "summary.json")
        writer.close()
        print(json.dumps(summary), flush=True)
    return 130 if was_interrupted else 0, model


def own_core(local_rank, local_world):
    """Pin this rank and the threads it starts (gloo's) to a core of its own, if it has peers to wait for
    and there are enough cores; returns whether it did. A rank on its own core waits for the collective
    by polling: on this 2-core virtual machine a rank that slept in it let its CPU go idle, and waking it
    took 2-6 ms one update in eight; pinned and polling, two ranks trained at 25-26k steps/s against
    21-22k sleeping (and 17.8k-19.2k unpinned). With more ranks than cores they share the cores and
    sleep; a lone rank is left free, as pinning its threads to one core slowed it."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if local_world == 1 or local_world > len(cores):
        return False
    os.sched_setaffinity(0, {cores[local_rank]})
    return True


def run_rank(rank, world, args, t0, store_port=None):
    """Join the process group (torchrun's env:// or the launcher's store), train, leave. Returns the exit code."""
    torch.set_num_threads(1)
    local_rank, local_world = (rank, world) if store_port is not None else (int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"]))
    poll = own_core(local_rank, local_world)  # before the process group starts gloo's threads
    try:
        timeout = timedelta(seconds=args.timeout_s)  # a lost rank fails the collectives instead of hanging them
        if store_port is None:
            dist.init_process_group("gloo", timeout=timeout)
        else:
            store = dist.TCPStore("127.0.0.1", store_port, world, is_master=False, timeout=timeout)
            dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
        code, _ = train(rank, world, args, t0, poll)
        # leave together: a rank tearing gloo down while rank 0 still evaluates aborted ~1 run in 8
        dist.barrier()
        dist.destroy_process_group()
        return code
    except PeerLost as e:
        print(f"rank {rank} stopped: another rank failed or left ({e})", file=sys.stderr, flush=True)
        time.sleep(2)  # so that the launcher (ours or torchrun) sees the rank that failed exit first
        return 1
    except Exception as e:
        traceback.print_exc()
        print(f"error: rank {rank} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1


def spawned_rank(rank, world, args, t0, store_port):
    sys.exit(run_rank(rank, world, args, t0, store_port))


def launch(args, t0):
    """Spawn `n_workers` local ranks around a store on loopback, watch them, return the exit code."""
    world = args.n_workers
    # The launcher hosts the rendezvous store: port 0 lets the OS pick a free port, with no race.
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=args.timeout_s))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=spawned_rank, args=(r, world, args, t0, store.port), daemon=True) for r in range(world)]
    # The ranks start with Ctrl-C ignored (inherited) so that one arriving while they import is no
    # traceback; train() installs the real handler, and until every rank is past that the launcher
    # keeps passing the interrupt on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p in procs:
        p.start()
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    while any(p.exitcode is None for p in procs):
        wait([p.sentinel for p in procs if p.exitcode is None], timeout=1.0)
        if interrupted:
            for p in procs:
                if p.exitcode is None:
                    os.kill(p.pid, signal.SIGINT)
        failed = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0, 130)]
        if failed:  # the others may be blocked in a collective with the dead rank: stop them now
            for p in procs:
                if p.exitcode is None:
                    p.kill()
                    p.join()
            rank, code = failed[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            print(f"error: rank {rank} {how}; the other ranks were stopped", file=sys.stderr)
            return 1
    return 130 if any(p.exitcode == 130 for p in procs) else 0


def main():
    t0 = time.time()
    args = tyro.cli(Args)
    torchrun_rank = int(os.environ["RANK"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None
    try:
        if args.eval_checkpoint:
            ckpt = load_checkpoint(args.eval_checkpoint, args.env_id)
            validate(args)
            model = build_model(args.env_id, ckpt["args"]["hidden_size"])
            model.load_state_dict(ckpt["model"])
            video_dir = Path(args.eval_checkpoint).parent / "videos" if args.capture_video else None
            returns = evaluate(model, args.env_id, args.eval_episodes, args.seed + 100_000, video_dir)
            print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
            return
        validate(args)
    except BadInput as e:
        if not torchrun_rank:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if torchrun_rank is not None:
        sys.exit(run_rank(torchrun_rank, int(os.environ["WORLD_SIZE"]), args, t0))
    sys.exit(launch(args, t0))


if __name__ == "__main__":
    main()
