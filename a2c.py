"""Synchronous advantage actor-critic (A2C) on vectorized gymnasium environments.

A2C is the synchronous variant of A3C (Mnih et al. 2016, "Asynchronous Methods for Deep
Reinforcement Learning", https://arxiv.org/abs/1602.01783): one learner steps `n_envs` copies of
the environment in lockstep for `n_steps`, computes n-step bootstrapped returns
R_t = r_t + gamma * R_{t+1}, R_T = V(s_T), and takes one gradient step on
    loss = -mean(A_t log pi(a_t|s_t)) + vf_coef * 0.5 * mean((R_t - V(s_t))^2) - ent_coef * H[pi],
    A_t = R_t - V(s_t)  (no gradient through A_t; for Box actions normalized over the batch).
Discrete actions get a categorical policy; Box actions a diagonal Gaussian N(mu(s), sigma^2) with
a state-independent log sigma (the A3C notes' Gaussian head) over actions scaled to [-1, 1] (so one
initial sigma suits every box), trained on its unclipped sample; the env gets it clipped and mapped.
Observations are normalized by running statistics saved with the model, rewards divided by the
running std of the discounted return ("Implementation Matters in Deep Policy Gradients", 2020).

    python a2c.py                                   # CartPole-v1 until solved, evaluate, save
    python a2c.py --env-id HalfCheetah-v5           # continuous actions, the Box defaults
    python a2c.py --eval-checkpoint runs/.../a2c.pt --capture-video

Siblings: `a3c.py`, `gae.py`, `da2c_nstep.py`, `a2c_atari.py`. Defaults: one set per kind of action
space (Args.KIND_DEFAULTS), each chosen on the whole suite of its kind; docs/a2c.md has the comparisons.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = ["torch==2.13.0", "gymnasium[classic-control,mujoco]==1.4.0", "numpy==2.4.6", "tyro==1.0.17",
#                 "tensorboard==2.21.0"]
# ///
import importlib.util
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory's name)"""
    seed: int = 1
    """seed of the experiment; environment i is seeded with seed + i"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (CPU runs are deterministic regardless)"""
    env_id: str = "CartPole-v1"
    """gymnasium id of an environment with flat Box observations and Discrete or bounded 1-D Box actions"""
    total_timesteps: int = 1_000_000
    """budget of environment steps, summed over all environments"""
    n_envs: Optional[int] = None
    """environment copies stepped in lockstep (None: KIND_DEFAULTS of the action space)"""
    n_steps: Optional[int] = None
    """steps per environment in each rollout, the n of the n-step return (None: KIND_DEFAULTS)"""
    learning_rate: Optional[float] = None
    """Adam learning rate (None: KIND_DEFAULTS)"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    vf_coef: Optional[float] = None
    """coefficient of the value loss (None: KIND_DEFAULTS)"""
    norm_adv: Optional[bool] = None
    """normalize each batch's advantages to mean 0 and std 1 (None: KIND_DEFAULTS)"""
    max_grad_norm: float = 0.5
    """maximum global norm of the gradient"""
    log_std_init: float = -0.75
    """initial log standard deviation of the Gaussian policy (Box actions, scaled to [-1, 1])"""
    target_return: Optional[float] = None
    """mean return of the last 100 training episodes that counts as solved (None: the env's reward_threshold)"""
    stop_at_target: bool = True
    """stop training once the target is reached"""
    eval_episodes: int = 10
    """episodes of greedy evaluation after training"""
    capture_video: bool = False
    """record the evaluation episodes to videos/ (needs moviepy)"""
    save_model: bool = True
    """save the model to the run directory"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model instead of training"""

    # the values that None stands for above, one set per kind of action space
    KIND_DEFAULTS: ClassVar[dict] = {
        "Discrete": dict(n_envs=32, n_steps=5, learning_rate=3e-3, vf_coef=0.1, norm_adv=False),
        "Box": dict(n_envs=8, n_steps=16, learning_rate=1e-3, vf_coef=0.5, norm_adv=True),
    }


def fail(message: str):  # a user error: one line on stderr, exit code 2
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def make_env(env_id: str, capture_video: bool = False, video_dir: str = ""):
    def thunk():
        if capture_video:
            os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo renders without a display only through EGL
            env = gym.make(env_id, render_mode="rgb_array")
            return gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True)
        return gym.make(env_id)

    return thunk


def nstep_returns(rewards, dones, bootstrap_values, last_value, gamma):
    """R_t = r_t + gamma * R_{t+1} backwards over a (T, n_envs) rollout, R_T = V(s_T); where step t ends
    an episode, R_{t+1} is bootstrap_values[t]: 0 after a termination, V(final observation) after a truncation."""
    returns = torch.zeros_like(rewards)
    next_return = last_value
    for t in reversed(range(rewards.shape[0])):
        next_return = torch.where(dones[t], bootstrap_values[t], next_return)
        returns[t] = next_return = rewards[t] + gamma * next_return
    return returns


def gaussian(mean, log_std):
    """Diagonal Gaussian: log N(a; mu, sigma) and its entropy are sums over the action dimensions."""
    return Independent(Normal(mean, log_std.exp()), 1)


class RunningMeanStd(nn.Module):
    """Mean and variance of every sample seen so far, merged batch by batch (buffers: saved with the model)."""

    def __init__(self, shape=()):
        super().__init__()
        for name, value in (("mean", torch.zeros(shape)), ("var", torch.ones(shape)), ("count", torch.tensor(1e-4))):
            self.register_buffer(name, value.double())

    def update(self, batch):
        batch = torch.as_tensor(batch, dtype=torch.float64)
        n_a, n_b, delta = self.count.clone(), batch.shape[0], batch.mean(0) - self.mean
        self.count += n_b
        self.mean += delta * n_b / self.count
        # Chan et al.: n var = n_a var_a + n_b var_b + delta^2 n_a n_b / n
        self.var.copy_((n_a * self.var + n_b * batch.var(0, unbiased=False) + delta**2 * n_a * n_b / self.count) / self.count)


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_size: int, out_size: int, out_std: float):
    """Two tanh hidden layers of 64 units, orthogonal initialization (output layer scaled by out_std)."""
    return nn.Sequential(layer_init(nn.Linear(in_size, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh(),
                         layer_init(nn.Linear(64, out_size), std=out_std))


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on normalized observations; the actor gives logits or a mean."""

    def __init__(self, observation_space, action_space, log_std_init: float):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_outputs = action_space.shape[0] if self.continuous else action_space.n
        self.obs_rms = RunningMeanStd(observation_space.shape)
        self.actor = mlp(observation_space.shape[0], n_outputs, out_std=0.01)
        self.critic = mlp(observation_space.shape[0], 1, out_std=1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.full((n_outputs,), log_std_init))
            low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (action_space.low, action_space.high))
            self.action_center, self.action_half_width = (high + low) / 2, (high - low) / 2

    def normalize(self, obs):  # (o - mean) / std, clipped to +-10 as in Stable-Baselines3's VecNormalize
        return ((obs - self.obs_rms.mean) / (self.obs_rms.var + 1e-8).sqrt()).clamp(-10, 10).float()

    def policy(self, obs):
        actor_out = self.actor(self.normalize(obs))
        return gaussian(actor_out, self.log_std) if self.continuous else Categorical(logits=actor_out)

    def value(self, obs):
        return self.critic(self.normalize(obs)).squeeze(-1)

    def act(self, obs, greedy: bool = False):
        """a ~ pi(.|s) (its mode if greedy), the action trained on, and the copy sent: for a Box, clipped and mapped."""
        policy = self.policy(obs)
        action = policy.mode if greedy else policy.sample()
        return action, self.action_center + self.action_half_width * action.clamp(-1, 1) if self.continuous else action


def check_args(args: Args):
    """Reject what this script cannot run before anything is written; fill the kind's defaults."""
    try:
        env = gym.make(args.env_id)
    except (gym.error.Error, ImportError) as error:
        fail(f"cannot make environment {args.env_id!r}: {error}")
    actions, observations = env.action_space, env.observation_space
    if not isinstance(actions, (gym.spaces.Discrete, gym.spaces.Box)):
        fail(f"{args.env_id} has a {type(actions).__name__} action space; a2c.py supports Discrete and Box")
    if isinstance(actions, gym.spaces.Box) and (len(actions.shape) != 1 or not np.isfinite(np.r_[actions.low, actions.high]).all()):
        fail(f"{args.env_id} has actions {actions}; a2c.py needs a 1-D Box with finite bounds")
    if not isinstance(observations, gym.spaces.Box) or len(observations.shape) != 1:
        fail(f"{args.env_id} has observations {observations}; a2c.py needs a flat Box (a2c_atari.py takes images)")
    vars(args).update({name: value for name, value in Args.KIND_DEFAULTS[type(actions).__name__].items() if getattr(args, name) is None})
    for name in ("total_timesteps", "n_envs", "n_steps", "eval_episodes", "learning_rate", "max_grad_norm"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    args.target_return = env.spec.reward_threshold if args.target_return is None else args.target_return
    if args.capture_video and importlib.util.find_spec("moviepy") is None:  # gymnasium's RecordVideo writes through it
        fail("--capture-video needs moviepy: pip install moviepy")
    return env


def load_checkpoint(path: str, args: Args):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != "a2c.py":
        fail(f"{path} is not an a2c.py checkpoint")
    if checkpoint["args"]["env_id"] != args.env_id:
        fail(f"{path} was trained on {checkpoint['args']['env_id']}, not {args.env_id} (pass --env-id {checkpoint['args']['env_id']})")
    return checkpoint


def evaluate(model, args: Args, video_dir: str = ""):
    """The greedy policy (argmax, or the clipped mean) on a fresh environment; returns episode returns."""
    env = gym.wrappers.RecordEpisodeStatistics(make_env(args.env_id, args.capture_video, video_dir)(), buffer_length=args.eval_episodes)
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 100_000 + episode)
        done = False
        while not done:
            with torch.no_grad():
                _, env_action = model.act(torch.as_tensor(obs), greedy=True)
            obs, _, terminated, truncated, _ = env.step(env_action.numpy())
            done = terminated or truncated
    env.close()
    return [float(episode_return) for episode_return in env.return_queue]


def main():
    start_time = time.time()
    args = tyro.cli(Args)
    env = check_args(args)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # a small MLP on a few rows: extra threads only add overhead

    model = ActorCritic(env.observation_space, env.action_space, args.log_std_init)
    if args.eval_checkpoint:
        model.load_state_dict(load_checkpoint(args.eval_checkpoint, args)["model"])
        returns = evaluate(model, args, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return

    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.n_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = episode_statistics = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # of the unscaled rewards
    envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)  # r / std of the discounted return
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    next_obs = torch.as_tensor(envs.reset(seed=args.seed)[0])  # environment i gets seed + i
    model.obs_rms.update(next_obs)

    from torch.utils.tensorboard import SummaryWriter

    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(start_time)}"
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    global_step, solved_at_step, solved_at_s, last_print, interrupted = 0, None, None, start_time, []
    recent_returns = episode_statistics.return_queue  # returns of the last 100 finished training episodes
    # Ctrl-C or `kill` sets a flag the loop reads: an exception raised wherever it lands could cut an update in half
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: interrupted.append(signum))
    while global_step < args.total_timesteps and not interrupted:
        rollout = []
        with torch.no_grad():  # acting records no graph: the update below takes one batched pass
            for _ in range(args.n_steps):
                action, env_action = model.act(next_obs)
                obs, reward, terminated, truncated, info = envs.step(env_action.numpy())
                global_step += args.n_envs
                # a truncated episode continues beyond the time limit: bootstrap from V(final_obs)
                bootstrap = torch.zeros(args.n_envs)
                cut_short = truncated & ~terminated
                if cut_short.any():
                    bootstrap[cut_short] = model.value(torch.as_tensor(np.stack(info["final_obs"][cut_short])))
                rollout.append((next_obs, action, torch.as_tensor(reward), torch.as_tensor(terminated | truncated), bootstrap))
                next_obs = torch.as_tensor(obs)
                model.obs_rms.update(next_obs)

                for i in np.flatnonzero(info.get("_episode", [])):
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
                if (solved_at_step is None and args.target_return is not None and len(recent_returns) == 100
                        and np.mean(recent_returns) >= args.target_return):
                    solved_at_step, solved_at_s = global_step, time.time() - start_time
            last_value = model.value(next_obs)

        if args.stop_at_target and solved_at_step is not None:
            break  # keep the model that reached the target, not one more update of it
        observations, actions, rewards, dones, bootstrap_values = (torch.stack(column) for column in zip(*rollout))
        returns = nstep_returns(rewards.float(), dones, bootstrap_values, last_value, args.gamma).flatten()
        policy, values = model.policy(observations.flatten(0, 1)), model.value(observations.flatten(0, 1))
        log_probs, entropy = policy.log_prob(actions.flatten(0, 1)), policy.entropy().mean()
        advantages = (returns - values).detach()
        if args.norm_adv and len(advantages) > 1:  # (A - mean(A)) / std(A): the policy's step is free of the return's units
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -(advantages * log_probs).mean()
        value_loss = 0.5 * (returns - values).pow(2).mean()
        loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()

        sps = int(global_step / (time.time() - start_time))
        if time.time() - last_print >= (0.5 if sys.stdout.isatty() else 10):
            print(f"\rstep {global_step}  SPS {sps}  return(100) {np.mean(recent_returns or [np.nan]):.1f}", end="" if sys.stdout.isatty() else "\n", flush=True)
            last_print = time.time()
        if global_step % (args.n_envs * args.n_steps * 50) == 0:
            for tag, value in (("losses/policy_loss", policy_loss), ("losses/value_loss", value_loss), ("losses/entropy", entropy), ("charts/SPS", sps)):
                writer.add_scalar(tag, float(value), global_step)
    envs.close()
    train_time_s = time.time() - start_time

    eval_returns = [] if interrupted else evaluate(model, args, os.path.join(run_dir, "videos"))
    for i, episode_return in enumerate(eval_returns):
        writer.add_scalar("eval/episodic_return", episode_return, i)
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt") if args.save_model else None
    if model_path:
        torch.save({"script": "a2c.py", "model": model.state_dict(), "args": vars(args)}, model_path + ".tmp")
        os.replace(model_path + ".tmp", model_path)
    summary = dict(script="a2c.py", env_id=args.env_id, seed=args.seed, global_step=global_step, episodes=int(episode_statistics.episode_count),
                   wall_time_s=round(time.time() - start_time, 3), sps=int(global_step / train_time_s),
                   target_return=args.target_return, solved=solved_at_step is not None, solved_at_step=solved_at_step,
                   solved_at_s=None if solved_at_s is None else round(solved_at_s, 3),
                   train_return_mean100=float(np.mean(recent_returns)) if recent_returns else None,
                   eval_return_mean=float(np.mean(eval_returns)) if eval_returns else None,
                   eval_return_std=float(np.std(eval_returns)) if eval_returns else None,
                   eval_episodes=len(eval_returns), model_path=model_path, interrupted=bool(interrupted))
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    writer.close()
    print(json.dumps(summary))
    if interrupted:
        sys.exit(128 + interrupted[0])  # 130 after Ctrl-C, 143 after `kill`


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing written yet
        sys.exit(130)
