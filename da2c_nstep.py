"""Distributed advantage actor-critic (DA2C) with n-step returns: synchronous, on torch.distributed.

Every rank (process) holds a replica of one two-headed actor-critic network and `--n-envs`
environments. Each update every rank plays `--n-steps` steps in each, computes the actor-critic
loss on its own experience, one `dist.all_reduce` sums the ranks' gradients, and every rank takes
the same `torch.optim.Adam` step with their mean. With n-step returns R_T = V(s_T) and
    R_t = r_t + gamma R_{t+1}, cut at a termination, V(final obs) after a truncation,
    loss = mean[-log pi(a|s) (R - V(s)) + vf_coef (R - V(s))^2 - ent_coef H(pi(.|s))].
The distributed training of "Deep Reinforcement Learning in Action" (Zai & Brown), ch. 5, made
synchronous: A3C's n-step actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

    python da2c_nstep.py --env-id Acrobot-v1                # 2 local ranks, through torchrun's launcher
    torchrun --standalone --nproc-per-node 4 da2c_nstep.py  # the same, started by torchrun
    torchrun --nnodes 2 --node-rank R --nproc-per-node 4 --rdzv-endpoint HOST:29500 da2c_nstep.py

Discrete actions: categorical policy; Box: diagonal Gaussian, state-independent log std. Observations
are normalized with running sums all-reduced with the gradients (saved with the model), rewards by a
running std of each rank's discounted returns. Replicas start from rank 0's weights and take the same
steps: bit-identical where all ranks run the same kernels (CPU type, torch build), elsewhere they may
round apart, which a checksum compared every 100 updates reports once. Rank 0 alone logs, evaluates
and saves, the last two after leaving the process group, so no peer's `--timeout-s` bounds them.
Siblings: `a2c.py` (one process), `a3c.py`, `gae.py` (asynchronous). Defaults: docs/da2c_nstep.md.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = ["torch==2.13.0", "gymnasium[classic-control,mujoco]==1.4.0", "numpy==2.4.6", "tyro==1.0.17", "tensorboard==2.21.0"]
# ///
import importlib.util
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.distributions import Categorical, Independent, Normal
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of the experiment (the run directory and the checkpoint are named after it)"""
    seed: int = 1
    """seed of the initial weights; rank r samples actions with seed + r, seeds its env i with seed + r * n_envs + i"""
    torch_deterministic: bool = True
    """sets `torch.backends.cudnn.deterministic`"""
    capture_video: bool = False
    """record the greedy evaluation episodes to `videos/` in the run directory"""
    save_model: bool = True
    """save the model to the run directory"""
    eval_checkpoint: str | None = None
    """evaluate this saved model greedily instead of training"""
    eval_episodes: int = 10
    """greedy evaluation episodes after training"""

    env_id: str = "CartPole-v1"
    """gymnasium id: a flat Box observation; Discrete or 1-D bounded Box actions"""
    total_timesteps: int = 1_000_000
    """environment steps of all ranks together"""
    n_workers: int = 2
    """local ranks to start; ignored under torchrun"""
    n_envs: int | None = None
    """environments each rank steps (None: 8 for Discrete actions, 4 for Box actions)"""
    n_steps: int | None = None
    """steps per environment per update, the n of n-step returns (None: 10 for Discrete actions, 16 for Box actions)"""
    learning_rate: float | None = None
    """Adam learning rate (None: 3e-3 for Discrete actions, 1e-3 for Box actions)"""
    gamma: float = 0.99
    """discount factor"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    vf_coef: float = 0.1
    """critic loss coefficient (the book's clc)"""
    normalize_reward: bool = True
    """divide rewards by a running standard deviation of the discounted return"""
    max_grad_norm: float = 0.5
    """clip the averaged gradient to this norm"""
    target_return: float | None = None
    """mean return of the last 100 training episodes that counts as solved (default: the env spec's)"""
    stop_at_target: bool = True
    """stop training once the target is reached"""
    timeout_s: float = 60.0
    """seconds a collective waits for a missing rank before the run fails"""


def fail(message):  # a user error: one line on stderr and exit code 2, before any process or file is created
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def nstep_returns(rewards, terminated, truncated, final_values, last_values, gamma):
    """Backwards over a [T, E] rollout: R_t = r_t + gamma (1 - term_t) (V(final obs_t) if trunc_t else R_{t+1}), R_T = V(s_T)."""
    returns, next_return = np.zeros_like(rewards), last_values
    for t in reversed(range(len(rewards))):
        next_return = rewards[t] + gamma * ~terminated[t] * np.where(truncated[t], final_values[t], next_return)
        returns[t] = next_return
    return returns


def gaussian(mean, log_std):
    """pi(a|s) = prod_i N(a_i; mean_i, exp(log_std_i)^2): log-probability and entropy sum over dimensions."""
    return Independent(Normal(mean, log_std.exp()), 1)


def actor_critic_loss(policy, values, actions, returns, vf_coef, ent_coef):
    """Mean over the batch of -log pi(a|s) (R - V(s)) + vf_coef (R - V(s))^2 - ent_coef H(pi(.|s))."""
    advantages = returns - values.detach()
    policy_loss = -(policy.log_prob(actions) * advantages).mean()
    value_loss = (returns - values).pow(2).mean()
    entropy = policy.entropy().mean()
    return policy_loss + vf_coef * value_loss - ent_coef * entropy, (policy_loss, value_loss, entropy)


def make_env(env_id, render_mode=None):
    return lambda: gym.make(env_id, render_mode=render_mode)


def layer_init(layer, std=np.sqrt(2)):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """The book's two-headed model: a shared trunk, an actor head, and a critic head with its own hidden layer."""

    def __init__(self, obs_dim, action_space, hidden=64):
        super().__init__()
        # count, sum and sum of squares of the observations seen, from a prior of one with mean 0 and variance 1
        self.register_buffer("obs_sums", torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64).repeat(1, obs_dim))
        n_out = action_space.shape[0] if isinstance(action_space, gym.spaces.Box) else action_space.n
        self.trunk = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, hidden)), nn.Tanh())
        self.actor = layer_init(nn.Linear(hidden, n_out), std=0.01)  # logits, or the Gaussian's mean
        self.log_std = nn.Parameter(torch.zeros(n_out)) if isinstance(action_space, gym.spaces.Box) else None
        self.critic = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, 1), std=1.0))

    def forward(self, obs):  # pi(.|s) and V(s)
        count, total, total_sq = self.obs_sums
        mean, var = total / count, (total_sq / count - (total / count) ** 2).clamp(min=0)  # var = E[x^2] - E[x]^2
        hidden = self.trunk(((obs - mean) / (var + 1e-8).sqrt()).clamp(-10, 10).float())
        policy = Categorical(logits=self.actor(hidden)) if self.log_std is None else gaussian(self.actor(hidden), self.log_std)
        return policy, self.critic(hidden).squeeze(-1)


def validate(args):
    """Fail on anything the run cannot handle; fill in the defaults of the action space's kind; return the environment."""
    if args.capture_video:
        if importlib.util.find_spec("moviepy") is None:  # gymnasium's RecordVideo writes through it
            fail("--capture-video needs moviepy: pip install moviepy")
        os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo loads: it renders without a display only with EGL
    try:
        env = gym.make(args.env_id)
    except (gym.error.Error, ModuleNotFoundError) as e:
        fail(f"cannot make environment {args.env_id!r}: {e}")
    space = env.action_space
    bounded_box = isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.isfinite([space.low, space.high]).all()
    if not (bounded_box or isinstance(space, gym.spaces.Discrete)):
        fail(f"{args.env_id}: action space {space} is not supported (Discrete, or a 1-D Box with finite bounds)")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        fail(f"{args.env_id} has observations {env.observation_space}; da2c_nstep.py needs a flat Box")
    kind_defaults = dict(learning_rate=(1e-3, 3e-3), n_envs=(4, 8), n_steps=(16, 10))  # (Box, Discrete)
    vars(args).update({name: pair[0 if bounded_box else 1] for name, pair in kind_defaults.items() if getattr(args, name) is None})
    for name in ("total_timesteps", "n_workers", "n_envs", "n_steps", "eval_episodes", "learning_rate", "max_grad_norm", "timeout_s"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    args.target_return = env.spec.reward_threshold if args.target_return is None else args.target_return  # None: trains its budget
    return env


def load_model(path, env_id, env):
    """The model saved at `path`, with its observation statistics, checked to be this script's for `env`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        fail(f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0])
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != Path(__file__).name:
        fail(f"{path} is not a {Path(__file__).name} checkpoint")
    if checkpoint["args"]["env_id"] != env_id:
        fail(f"{path} was trained on {checkpoint['args']['env_id']}, not {env_id} (pass --env-id)")
    model = ActorCritic(env.observation_space.shape[0], env.action_space)
    model.load_state_dict(checkpoint["model"])
    return model


def evaluate(model, args, run_dir):
    """Returns of greedy episodes: the most likely action, or the Gaussian's mean clipped to the bounds."""
    env = make_env(args.env_id, "rgb_array" if args.capture_video else None)()
    if args.capture_video:
        env = gym.wrappers.RecordVideo(env, str(Path(run_dir) / "videos"), episode_trigger=lambda _: True, disable_logger=True)
    returns = [0.0] * args.eval_episodes
    for episode in range(args.eval_episodes):
        obs, done = env.reset(seed=args.seed + 100_000 if episode == 0 else None)[0], False
        while not done:
            with torch.no_grad():
                action = model(torch.as_tensor(obs, dtype=torch.float32))[0].mode.numpy()
            if isinstance(env.action_space, gym.spaces.Box):
                action = np.clip(action, env.action_space.low, env.action_space.high)
            obs, reward, terminated, truncated, _ = env.step(action)
            returns[episode], done = returns[episode] + float(reward), terminated or truncated
    env.close()
    return returns


def train(args, rank, world, t0, writer=None, launcher=None):
    """One rank's training in an initialized process group (rank 0 logs to `writer`): the replica and the run's figures."""
    T, E, interrupted = args.n_steps, args.n_envs, []
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or SIGTERM from torchrun's shutdown or a scheduler: stop and save
        signal.signal(signum, lambda *_: interrupted.append(True))
    torch.backends.cudnn.deterministic = args.torch_deterministic
    envs = gym.wrappers.vector.RecordEpisodeStatistics(  # episode returns before any reward scaling
        gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(E)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    if args.normalize_reward:  # gymnasium's running std of the discounted return, of this rank's environments
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    torch.manual_seed(args.seed)
    model = ActorCritic(obs_dim, action_space)
    params = list(model.parameters())
    for p in params:  # the seed gives every rank the same weights; this makes it so on any machine
        dist.broadcast(p.data, src=0)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate)
    torch.manual_seed(args.seed + rank)  # action sampling differs by rank

    # one all_reduce per update, of one buffer: the gradients (each p.grad a view of its head), counters, observation sums
    n_grad = sum(p.numel() for p in params)
    flat = torch.zeros(n_grad + 4 + 3 * obs_dim)
    grads, counters, obs_sums = flat[:n_grad], flat[n_grad : n_grad + 4], flat[n_grad + 4 :].view(3, obs_dim)
    for p, grad in zip(params, grads.split([p.numel() for p in params])):
        p.grad = grad.view_as(p)

    obs_buf, final_obs = np.zeros((T, E, obs_dim), np.float32), np.zeros((T, E, obs_dim), np.float32)
    actions = np.zeros((T, E, *action_space.shape), action_space.dtype)
    rewards, terminated, truncated = np.zeros((T, E), np.float32), np.zeros((T, E), bool), np.zeros((T, E), bool)
    recent = deque(maxlen=-(-100 // world))  # this rank's share of the last 100 episodes of all ranks
    global_step, update, episodes, mean100, solved_at_step, solved_at_s, warned, last_print = 0, 0, 0, None, None, None, False, 0
    obs, _ = envs.reset(seed=args.seed + rank * E)  # environment i of rank r: seed + r * n_envs + i
    while True:
        finished = 0
        for t in range(T):
            obs_buf[t] = obs
            with torch.no_grad():
                actions[t] = model(torch.as_tensor(obs, dtype=torch.float32))[0].sample().numpy()
            # train on the unclipped sample; only the copy sent to the environment is clipped
            env_actions = actions[t] if action_space.shape == () else np.clip(actions[t], action_space.low, action_space.high)
            obs, rewards[t], terminated[t], truncated[t], info = envs.step(env_actions)
            for e in np.flatnonzero(info.get("_final_obs", ())):  # obs[e] already starts the next episode
                final_obs[t, e] = info["final_obs"][e]
            for e in np.flatnonzero(info.get("_episode", ())):
                finished += 1
                recent.append(float(info["episode"]["r"][e]))
                for tag, key in [("charts/episodic_return", "r"), ("charts/episodic_length", "l")] if writer else []:
                    writer.add_scalar(tag, info["episode"][key][e], global_step + (t + 1) * E * world)
        truncated &= ~terminated

        with torch.no_grad():  # V(s_T), and V(final obs) of every step (read only where it was truncated)
            last_values = model(torch.as_tensor(obs, dtype=torch.float32))[1].numpy()
            final_values = model(torch.from_numpy(final_obs))[1].numpy()
        returns = nstep_returns(rewards, terminated, truncated, final_values, last_values, args.gamma)
        flat.zero_()
        rollout_obs = torch.from_numpy(obs_buf.reshape(T * E, obs_dim))
        policy, values = model(rollout_obs)
        loss, (policy_loss, value_loss, entropy) = actor_critic_loss(
            policy, values, torch.from_numpy(actions.reshape(T * E, *action_space.shape)),
            torch.from_numpy(returns.reshape(-1)), args.vf_coef, args.ent_coef)
        loss.backward()
        counters.copy_(torch.tensor([finished, sum(recent), len(recent), len(interrupted) + (launcher not in (None, os.getppid()))]))
        obs_sums.copy_(torch.stack([torch.full((obs_dim,), T * E), rollout_obs.sum(0), rollout_obs.pow(2).sum(0)]))
        dist.all_reduce(flat)  # sums over ranks, the same bits on every rank; raises if a rank is gone
        grads /= world  # the mean of the ranks' gradients: the gradient of the loss over all their samples
        nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        model.obs_sums += obs_sums  # every rank adds the same sums: its replica normalizes as the others do
        update, global_step, episodes = update + 1, global_step + world * T * E, episodes + int(counters[0])
        mean100 = counters[1].item() / counters[2].item() if counters[2] > 0 else None
        if solved_at_step is None and args.target_return is not None and counters[2] >= 100 and mean100 >= args.target_return:
            solved_at_step, solved_at_s = global_step, round(time.time() - t0, 3)
        if update % 100 == 0 and not warned:  # an exact checksum, the sum of the parameters' bits: max = min over ranks?
            checksum = torch.cat([p.detach().flatten() for p in params]).view(torch.int32).sum(dtype=torch.int64)
            extremes = torch.stack([checksum, -checksum])
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
            if (warned := bool(extremes[0] != -extremes[1])) and rank == 0:
                print(f"warning: the replicas differ at update {update} (CPUs that round differently?)", file=sys.stderr, flush=True)
        stop = (solved_at_step is not None and args.stop_at_target) or counters[3] > 0 or global_step >= args.total_timesteps
        if writer and (update % 100 == 0 or stop):
            sps = int(global_step / (time.time() - t0))
            for tag, value in {"charts/SPS": sps, "losses/policy_loss": policy_loss, "losses/value_loss": value_loss,
                               "losses/entropy": entropy}.items():
                writer.add_scalar(tag, value, global_step)
            if sys.stdout.isatty() or stop or time.time() - last_print >= 10:  # in place on a terminal, every 10 s in a log
                print(f"\rstep {global_step}  SPS {sps}  return(100) {mean100 or 0:.1f}", end="" if sys.stdout.isatty() and not stop else "\n", flush=True)
                last_print = time.time()
        if stop:
            envs.close()
            return model, {"global_step": global_step, "episodes": episodes, "solved": solved_at_step is not None, "solved_at_step":
                           solved_at_step, "solved_at_s": solved_at_s, "train_return_mean100": mean100, "interrupted": counters[3].item() > 0}


def run_rank(args, t0):
    """One rank: join torchrun's process group, train, leave it; rank 0 then evaluates and saves. Returns the exit code."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=args.timeout_s))  # a lost rank fails, never hangs
    rank, world, launcher = dist.get_rank(), dist.get_world_size(), os.getppid()  # launcher: elastic_launch's process or torchrun's
    run_dir = Path("runs") / f"{args.env_id}__{args.exp_name}__{args.seed}__{int(t0)}"
    writer = SummaryWriter(str(run_dir)) if rank == 0 else None
    if writer:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    try:
        model, result = train(args, rank, world, t0, writer, launcher)  # it stops as on Ctrl-C if a rank's launcher is killed
    except Exception as error:  # the launcher reports the first rank it sees fail: maybe one whose peer failed first
        print(f"error: rank {rank} failed: {error!r}", file=sys.stderr, flush=True)
        raise
    dist.barrier()
    dist.destroy_process_group()  # what rank 0 does next waits on no peer, so no --timeout-s bounds it
    exit_code = 130 if result["interrupted"] else 0  # the same on every rank
    if rank == 0:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C must not cut the evaluation and save short
        eval_returns = [] if result["interrupted"] else evaluate(model, args, run_dir)
        for i, episode_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episode_return, i)
        model_path = run_dir / f"{args.exp_name}.pt" if args.save_model else None
        if model_path:
            torch.save({"script": Path(__file__).name, "model": model.state_dict(), "args": vars(args)}, model_path.with_suffix(".tmp"))
            os.replace(model_path.with_suffix(".tmp"), model_path)
        wall = time.time() - t0
        summary = {"script": Path(__file__).name, "env_id": args.env_id, "seed": args.seed, **result, "wall_time_s": round(wall, 3),
                   "sps": int(result["global_step"] / wall), "target_return": args.target_return, "eval_episodes": len(eval_returns),
                   "eval_return_mean": float(np.mean(eval_returns)) if eval_returns else None,
                   "eval_return_std": float(np.std(eval_returns)) if eval_returns else None, "model_path": model_path and str(model_path)}
        (run_dir / "summary.json.tmp").write_text(json.dumps(summary, indent=2))
        os.replace(run_dir / "summary.json.tmp", run_dir / "summary.json")
        writer.close()
        print(json.dumps(summary), flush=True)

    def exit_if_orphaned():  # elastic_launch's wrapper around run_rank waits for its launcher to read the exit code: a killed one never will
        while os.getppid() == launcher:
            time.sleep(0.1)
        os._exit(exit_code)

    threading.Thread(target=exit_if_orphaned, daemon=True).start()
    return exit_code


def main():
    t0 = time.time()
    args = tyro.cli(Args)
    env = validate(args)
    if args.eval_checkpoint:
        model = load_model(args.eval_checkpoint, args.env_id, env)
        returns = evaluate(model, args, Path(args.eval_checkpoint).parent)
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return
    if "RANK" in os.environ:  # started by torchrun: this process is one rank
        sys.exit(run_rank(args, t0))
    # what `torchrun --standalone --nproc-per-node N` runs, with ranks started the platform's default way (forked on Linux)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the ranks' to handle: they stop, and rank 0 saves
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.n_workers, rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                          run_id=f"da2c-{os.getpid()}", max_restarts=0, start_method=multiprocessing.get_start_method(),
                          signals_to_handle="SIGQUIT")  # SIGTERM, SIGHUP kill it: its ranks then stop and save as on Ctrl-C
    try:
        exit_codes = elastic_launch(config, run_rank)(args, t0)
    except ChildFailedError as e:
        sys.exit(f"error: {e}")
    sys.exit(max(exit_codes.values()))


if __name__ == "__main__":
    main()
