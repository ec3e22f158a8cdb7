"""Synchronous advantage actor-critic (A2C) on vectorized gymnasium environments.

A2C is the synchronous variant of A3C (Mnih et al. 2016, "Asynchronous Methods for Deep
Reinforcement Learning", https://arxiv.org/abs/1602.01783): one learner steps `n_envs` copies of
the environment in lockstep for `n_steps`, computes n-step bootstrapped returns

    R_t = r_t + gamma * R_{t+1},    R_T = V(s_T),

and takes one gradient step on

    loss = -mean(A_t * log pi(a_t|s_t)) + vf_coef * 0.5 * mean((R_t - V(s_t))^2) - ent_coef * H[pi],
    A_t  = R_t - V(s_t)  (no gradient through A_t in the policy term).

Run it:
    python a2c.py                      # CartPole-v1 until solved, then greedy evaluation and save
    python a2c.py --async-envs         # environments in subprocesses (gymnasium AsyncVectorEnv)
    python a2c.py --eval-checkpoint runs/.../a2c.pt --capture-video

Siblings: `a3c.py` and `gae.py` run asynchronous Hogwild workers on shared memory, `da2c_nstep.py`
averages gradients across processes or machines with torch.distributed, `a2c_atari.py` is this
algorithm on Atari pixels. Here there is one process, one model and one optimizer.

Defaults (tuned for the fastest reliable CartPole-v1 solve on a 2-core CPU, see README) differ from
the seeds: the threaded A2C notes (seed 002) use Adam lr 5e-4 with 6 workers and 5 steps, the A3C
paper RMSProp with 5 steps and entropy 0.01. Here: Adam lr 4e-3, 32 environments, 5 steps, value
coefficient 0.1 (the DA2C seed's critic scale) and no entropy bonus. Seconds to solve from the
script's start (`--eval-episodes 10`, 2026-11-23, configurations interleaved seed by seed): 32 x 5
at lr 4e-3 took 4.2-9.0 s on seeds 1-16 (median 6.6; 127,008-196,512 steps), against 6.2-10.7 s
(median 8.1; 142k-238k steps) for 16 x 10 at lr 3e-3, the former defaults; on seeds 1-8, 32 x 5 at
lr 3e-3 took 5.2-10.3 s and one seed's greedy policy then scored 132.8, 64 x 5 at lr 4e-3 5.9-9.1 s
(181k-289k steps), 32 x 10 at lr 5e-3 4.2-8.8 s on seeds 1-5 with one greedy evaluation at 482.7.
Every 32 x 5 greedy evaluation at lr 4e-3 scored at least 496.4. Rollouts of 160 steps share the
cost of an update among many steps, and one forward pass acts for all 32 environments. Earlier, with
vf_coef 0.5 the same batch needed about twice the steps (16 x 10 at 3e-3: 445k and 279k steps on
seeds 1-2), and rl-zoo's 8 environments x 5 steps at lr 2e-3 took 18.9-36.4 s (seeds 1-6). The run
stops on the step that reaches the target, without a last update: with one more update at lr
3e-3, a solved seed once evaluated at 12.
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
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory's name)"""
    seed: int = 1
    """seed of the experiment; environment i is seeded with seed + i"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (CPU runs are deterministic regardless)"""
    cuda: bool = False
    """train on the GPU when there is one (a small MLP is faster on the CPU)"""
    env_id: str = "CartPole-v1"
    """gymnasium id of an environment with a flat Box observation and a Discrete action space"""
    total_timesteps: int = 1_000_000
    """budget of environment steps, summed over all environments"""
    n_envs: int = 32
    """number of environment copies stepped in lockstep"""
    n_steps: int = 5
    """steps per environment in each rollout (the n of the n-step return)"""
    async_envs: bool = False
    """step the environments in subprocesses, one per environment (gymnasium AsyncVectorEnv), instead of in this
    process; for envs as cheap as CartPole it is slower (32 envs on 2 cores: 4.5k steps/s)"""
    learning_rate: float = 4e-3
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.1
    """coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """maximum global norm of the gradient"""
    hidden_size: int = 64
    """width of the two hidden layers of the shared trunk"""
    target_return: Optional[float] = None
    """mean return over the last 100 training episodes that counts as solved (default: the env's reward_threshold)"""
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


def fail(message: str):
    """A user error: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def make_env(env_id: str, capture_video: bool = False, video_dir: str = ""):
    def thunk():
        if multiprocessing.parent_process() is not None:
            # an --async-envs worker: Ctrl-C reaches the whole process group, but only the learner acts on it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if capture_video:
            env = gym.make(env_id, render_mode="rgb_array")
            return gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True)
        return gym.make(env_id)

    return thunk


def nstep_returns(rewards, dones, bootstrap_values, last_value, gamma):
    """n-step returns over a (T, n_envs) rollout, computed backwards.

    R_t = r_t + gamma * R_{t+1} with R_T = V(s_T). Where step t ends an episode, R_{t+1} is replaced
    by bootstrap_values[t]: 0 after a termination, V(final observation) after a truncation.
    """
    returns = torch.zeros_like(rewards)
    next_return = last_value
    for t in reversed(range(rewards.shape[0])):
        next_return = torch.where(dones[t], bootstrap_values[t], next_return)
        returns[t] = next_return = rewards[t] + gamma * next_return
    return returns


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class ActorCritic(nn.Module):
    """One MLP trunk, two heads: policy logits and state value."""

    def __init__(self, obs_dim: int, n_actions: int, hidden_size: int):
        super().__init__()
        self.trunk = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden_size)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            nn.Tanh(),
        )
        self.policy_head = layer_init(nn.Linear(hidden_size, n_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(hidden_size, 1), std=1.0)

    def forward(self, obs):
        hidden = self.trunk(obs)
        return self.policy_head(hidden), self.value_head(hidden).squeeze(-1)

    def value(self, obs):
        return self.value_head(self.trunk(obs)).squeeze(-1)


class Adam:
    """Adam (Kingma & Ba 2015, https://arxiv.org/abs/1412.6980) written out: torch.optim imports
    torch._dynamo on first use, 1.2 s of start-up, over a tenth of the time this script takes to solve
    CartPole. The same update as torch.optim.Adam, in the same order (tests/test_a2c.py checks it)."""

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


def check_args(args: Args):
    """Reject what this script cannot run before anything is written."""
    for name in ("total_timesteps", "n_envs", "n_steps", "eval_episodes", "hidden_size"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    if args.learning_rate <= 0 or args.max_grad_norm <= 0:
        fail("--learning-rate and --max-grad-norm must be positive")
    try:
        env = gym.make(args.env_id)
    except gym.error.Error as error:
        fail(f"cannot make environment {args.env_id!r}: {error}")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        fail(f"{args.env_id} has a {type(env.action_space).__name__} action space; a2c.py supports Discrete actions only")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        fail(f"{args.env_id} has observations {env.observation_space}; a2c.py needs a flat Box (use a2c_atari.py for pixels)")
    if args.target_return is None:
        args.target_return = env.spec.reward_threshold
    env.close()
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes through it)
        except ImportError:
            fail("--capture-video needs moviepy: pip install moviepy")


def load_checkpoint(path: str, args: Args):
    if not os.path.isfile(path):
        fail(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != "a2c.py":
        fail(f"{path} is not an a2c.py checkpoint (script: {checkpoint.get('script') if isinstance(checkpoint, dict) else None})")
    if checkpoint["args"]["env_id"] != args.env_id:
        fail(f"{path} was trained on {checkpoint['args']['env_id']}, not {args.env_id} (pass --env-id {checkpoint['args']['env_id']})")
    return checkpoint


def evaluate(model, args: Args, device, video_dir: str = ""):
    """Greedy policy (argmax of the logits) on a fresh environment; returns the episode returns."""
    env = make_env(args.env_id, args.capture_video, video_dir)()
    episode_returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 100_000 + episode)
        done, episode_return = False, 0.0
        while not done:
            with torch.no_grad():
                logits, _ = model(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, reward, terminated, truncated, _ = env.step(logits.argmax().item())
            episode_return += float(reward)
            done = terminated or truncated
        episode_returns.append(episode_return)
    env.close()
    return episode_returns


def main():
    start_time = time.time()
    args = tyro.cli(Args)
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # a small MLP on a few rows: extra threads only add overhead
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    if args.eval_checkpoint:
        checkpoint = load_checkpoint(args.eval_checkpoint, args)
        env = gym.make(args.env_id)
        model = ActorCritic(env.observation_space.shape[0], env.action_space.n, checkpoint["args"]["hidden_size"]).to(device)
        model.load_state_dict(checkpoint["model"])
        returns = evaluate(model, args, device, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return

    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_env([make_env(args.env_id) for _ in range(args.n_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    model = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.n, args.hidden_size).to(device)
    optimizer = Adam(model.parameters(), lr=args.learning_rate)
    next_obs, _ = envs.reset(seed=args.seed)  # environment i gets seed + i
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)

    from torch.utils.tensorboard import SummaryWriter

    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(start_time)}"
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    global_step, episodes, solved_at_step, solved_at_s = 0, 0, None, None
    recent_returns = deque(maxlen=100)
    interrupted = False
    progress = Progress(args.total_timesteps)
    try:
        while global_step < args.total_timesteps:
            observations, actions, rewards, dones, bootstrap_values = [], [], [], [], []
            for _ in range(args.n_steps):
                with torch.no_grad():  # acting needs only the policy head
                    probs = model.policy_head(model.trunk(next_obs)).softmax(-1)
                # inverse-CDF sampling, a = #{k < n-1 : u > P(A <= k)} with u ~ U(0, 1): a quarter of the
                # cost of Categorical(logits).sample() on a few rows (14 against 51 us for 8 rows)
                action = (torch.rand(args.n_envs, 1, device=device) > probs.cumsum(-1)[:, :-1]).sum(-1)
                obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
                global_step += args.n_envs
                observations.append(next_obs)
                actions.append(action)
                rewards.append(reward)
                dones.append(terminated | truncated)
                # a truncated episode continues beyond the time limit: bootstrap from V(final_obs)
                bootstrap = np.zeros(args.n_envs, dtype=np.float32)
                cut_short = truncated & ~terminated
                if cut_short.any():
                    final_obs = torch.as_tensor(np.stack(info["final_obs"][cut_short]), dtype=torch.float32, device=device)
                    with torch.no_grad():
                        bootstrap[cut_short] = model.value(final_obs).cpu().numpy()
                bootstrap_values.append(bootstrap)
                next_obs = torch.as_tensor(obs, dtype=torch.float32, device=device)

                for i in np.flatnonzero(info.get("_episode", [])):
                    episodes += 1
                    recent_returns.append(info["episode"]["r"][i])
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
                    if len(recent_returns) == 100 and np.mean(recent_returns) >= args.target_return and solved_at_step is None:
                        solved_at_step, solved_at_s = global_step, time.time() - start_time

            if args.stop_at_target and solved_at_step is not None:
                break  # keep the model that reached the target: one more update can wreck it (docstring)
            with torch.no_grad():
                last_value = model.value(next_obs)
            rewards, dones, bootstrap_values = (torch.as_tensor(np.stack(rows), device=device) for rows in (rewards, dones, bootstrap_values))
            returns = nstep_returns(rewards.float(), dones, bootstrap_values, last_value, args.gamma)
            # Acting without a graph and taking one batched pass over the rollout here costs less than
            # recording autograd through every step (measured: 30% more steps per second).
            logits, values = model(torch.stack(observations).flatten(0, 1))
            policy = Categorical(logits=logits, validate_args=False)
            log_probs, entropy = policy.log_prob(torch.stack(actions).flatten()), policy.entropy().mean()
            returns = returns.flatten()
            advantages = (returns - values).detach()
            policy_loss = -(advantages * log_probs).mean()
            value_loss = 0.5 * (returns - values).pow(2).mean()
            loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy
            model.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()

            sps = int(global_step / (time.time() - start_time))
            progress.update(global_step, sps, np.mean(recent_returns) if recent_returns else 0.0)
            if global_step % (args.n_envs * args.n_steps * 50) == 0:
                writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
                writer.add_scalar("losses/value_loss", value_loss.item(), global_step)
                writer.add_scalar("losses/entropy", entropy.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
    except KeyboardInterrupt:
        interrupted = True
    progress.close()
    # after Ctrl-C a step may be half received: end the --async-envs workers rather than wait on them
    envs.close(terminate=interrupted)
    train_time_s = time.time() - start_time

    eval_returns = []
    if not interrupted:
        eval_returns = evaluate(model, args, device, os.path.join(run_dir, "videos"))
        for i, episode_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episode_return, i)
    model_path = None
    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
        torch.save({"script": "a2c.py", "model": model.state_dict(), "args": vars(args)}, model_path + ".tmp")
        os.replace(model_path + ".tmp", model_path)
    wall_time_s = time.time() - start_time
    summary = {
        "script": "a2c.py",
        "env_id": args.env_id,
        "seed": args.seed,
        "global_step": global_step,
        "episodes": episodes,
        "wall_time_s": round(wall_time_s, 3),
        "sps": int(global_step / train_time_s),
        "target_return": args.target_return,
        "solved": solved_at_step is not None,
        "solved_at_step": solved_at_step,
        "solved_at_s": None if solved_at_s is None else round(solved_at_s, 3),
        "train_return_mean100": float(np.mean(recent_returns)) if recent_returns else None,
        "eval_return_mean": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_return_std": float(np.std(eval_returns)) if eval_returns else None,
        "eval_episodes": len(eval_returns),
        "model_path": model_path,
        "interrupted": interrupted,
    }
    with open(os.path.join(run_dir, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(os.path.join(run_dir, "summary.json.tmp"), os.path.join(run_dir, "summary.json"))
    writer.close()
    print(json.dumps(summary))
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing written yet
        sys.exit(130)
