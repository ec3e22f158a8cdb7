"""A3C with generalized advantage estimation: Hogwild! workers, shared optimizers, GAE(lambda) advantages.

Schulman et al. 2016, "High-dimensional continuous control using generalized advantage estimation",
https://arxiv.org/abs/1506.02438, on top of A3C: Mnih et al. 2016, "Asynchronous Methods for Deep
Reinforcement Learning", https://arxiv.org/abs/1602.01783, updating lock-free as in Niu et al. 2011,
"HOGWILD!", https://arxiv.org/abs/1106.5730.

Each of `n_workers` processes owns an environment and local copies of a policy network and a value
network. It copies the global weights, acts for up to `n_steps` steps (fewer if the episode ends), and
computes, in one backward pass over the rollout, the TD errors and their exponentially weighted sums

    delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}  =  sum_k (gamma * lambda)^k delta_{t+k}

(a time limit is not a terminal state: a truncated step's V(s_{t+1}) is V(final observation); the
rollout's last step uses V(s_T) unless the episode terminated there), then the gradients of

    policy: -mean(A_t * log pi(a_t|s_t)) - ent_coef * H[pi]     (A_t held constant)
    value:  0.5 * mean((G_t - V(s_t))^2),  G_t = A_t + V(s_t)  (the lambda-return, held constant)

locally, hands them to the global networks in shared memory and steps the shared optimizers (Adam for
the policy, RMSprop for the value, their state in shared memory too), with no lock. The main process
only collects finished episodes from a queue, logs, decides when to stop, evaluates and saves.

Why these targets. The n-step advantage A^(n)_t = r_t + ... + gamma^(n-1) r_{t+n-1} + gamma^n V(s_{t+n}) - V(s_t)
telescopes into delta_t + gamma delta_{t+1} + ... + gamma^(n-1) delta_{t+n-1}, so the lambda-weighted mix
(1 - lambda) sum_n lambda^(n-1) A^(n)_t of all of them (within the rollout) is sum_k (gamma lambda)^k delta_{t+k}:
the short, low-variance but biased estimates weigh most. lambda = 1 weighs nothing down: the sum
telescopes to R_t - V(s_t), with R_t the discounted rewards to the end of the rollout plus
gamma^(T-t) V(s_T) (0 if terminal), which is a3c.py's advantage (Monte-Carlo within the rollout).
lambda = 0 leaves delta_t alone, the one-step TD error r_t + gamma V(s_{t+1}) - V(s_t). The value
target G_t = A_t + V(s_t) is the same mix of n-step returns, (1 - lambda) sum_n lambda^(n-1) R^(n)_t, the
lambda-return of TD(lambda): the critic gets the same bias-variance trade-off as the actor, and at
lambda = 1 it is a3c.py's target R_t. (The seed fits the value to R_t whatever lambda is.)

Run it:
    python gae.py --n-workers 8                 # CartPole-v1 until solved, then greedy evaluation and save
    python gae.py --gae-lambda 1.0              # the advantages (and targets) of a3c.py
    python gae.py --start-method spawn          # as on macOS and Windows
    python gae.py --eval-checkpoint runs/.../gae.pt --capture-video

Siblings: `a3c.py` is this script with n-step advantages (lambda = 1); `a2c.py` is the synchronous
version (one process, one model, vectorized environments); `da2c_nstep.py` averages the gradients of
synchronous workers instead of applying them asynchronously. The policy and value networks are
separate, as in the seed notebook, so that each has its own optimizer.

Differences from the seed notebook, besides the fixes that a3c.py makes too (fresh local gradients on
every update, a shared `step`, no busy-waiting, picklable workers): the value target is the
lambda-return, not the n-step return; the policy loss has no gamma^t factor (see the comment in
`train`); a truncated step bootstraps from V(final observation) and stops the recursion there.

Defaults are a3c.py's, tuned there for the fastest reliable CartPole-v1 solve with 8 workers on 2 cores
(both networks 64-64 tanh, Adam 7e-4, RMSprop 1e-3, entropy 0.01, 32 steps, gamma 0.99, where the seed
has 128-64 and 256-128 ReLU, Adam 5e-4, RMSprop 7e-4, entropy 0.001, 50 steps), plus the seed's
lambda = 0.95. Steps to solve, `--n-workers 8`, seeds 1-5, each run three times (A3C is not
deterministic: the workers race): these defaults 62k-214k, median 95k; a3c.py's defaults 76k-134k,
median 108k; this script with lambda = 1 (a3c.py's advantages; once) 105k-132k, median 117k. So GAE
took some 12% fewer steps at the median, with a wider spread (one run of 15 needed 214k, the next 114k).
Tried once around the defaults (median over seeds 1-5): lambda 0.8 110k, 0.9 91k,
0.98 99k, no better than 0.95 beyond the noise; 64 steps 118k; 16 steps left three seeds of five
unsolved after 500k; a policy learning rate of 1e-3 96k (one seed 138k).
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
import ctypes
import importlib.util
import json
import multiprocessing
import os
import platform
import queue
import random
import signal
import struct
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import tyro


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (names the run directory and the checkpoint)"""
    seed: int = 1
    """seed of the experiment; worker i uses seed + i"""
    torch_deterministic: bool = True
    """set `torch.backends.cudnn.deterministic` (A3C stays nondeterministic: workers race)"""
    env_id: str = "CartPole-v1"
    """the id of a gymnasium environment with a Discrete action space and a flat observation"""
    total_timesteps: int = 500_000
    """environment steps, summed over all workers, after which training stops"""
    n_workers: int = 8
    """worker processes, each with its own environment and local networks"""
    n_steps: int = 32
    """steps per update (t_max); fewer if the episode ends first"""
    learning_rate: float = 7e-4
    """learning rate of the policy's shared Adam"""
    value_learning_rate: float = 1e-3
    """learning rate of the value network's shared RMSprop"""
    policy_hidden: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the policy network"""
    value_hidden: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the value network"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of GAE, in [0, 1] (the seed calls it tau): 0 gives one-step TD errors, 1 the n-step advantage"""
    ent_coef: float = 0.01
    """weight of the entropy bonus in the policy loss"""
    max_grad_norm: float = 1.0
    """clip each network's local gradient to this norm"""
    target_return: Optional[float] = None
    """mean return over the last 100 training episodes that counts as solved (default: the env's reward_threshold)"""
    stop_at_target: bool = True
    """stop as soon as the target is reached"""
    eval_episodes: int = 10
    """greedy evaluation episodes at the end of training"""
    capture_video: bool = False
    """record the evaluation episodes to `videos/` (needs moviepy)"""
    save_model: bool = True
    """save the networks to the run directory"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model and exit, without training"""
    start_method: Optional[str] = None
    """multiprocessing start method: fork, spawn or forkserver (default: the platform's)"""


def compute_gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """GAE(gamma, lambda) advantages of one rollout, in one backward pass; all arguments are per step t.

    `next_values[t]` is V(s_{t+1}): the value of the next state of the same episode, V(final observation)
    after a truncation, V(s_T) for the rollout's last step (anything after a termination: it is masked).
    `dones[t]` = terminated or truncated: the episode ends at t, and so does the sum of TD errors.
    """
    advantages = np.zeros(len(rewards), dtype=np.float32)
    advantage = 0.0  # A_T = 0: nothing is known after the rollout's last step except V(s_T), in delta_{T-1}
    for t in reversed(range(len(rewards))):
        # delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)       (one-step TD error)
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        # A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}  =  sum_k (gamma * lambda)^k delta_{t+k}
        advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * advantage
        advantages[t] = advantage
    return advantages


def mlp(n_in, hidden, n_out):
    sizes = (n_in, *hidden)
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.Tanh())]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


def make_networks(obs_dim, n_actions, args):
    return mlp(obs_dim, args.policy_hidden, n_actions), mlp(obs_dim, args.value_hidden, 1)


class SharedAdam(torch.optim.Adam):
    """torch.optim.Adam whose state is created up front in shared memory, so all workers update one state.

    Adam would create its state lazily, in each process's private memory. `step` must be a tensor:
    Adam reads it for the bias correction 1 - beta^step and increments it in place. The foreach
    update (faster than the per-tensor loop) also writes every state tensor in place, as the tests check.
    Pickled to a spawned worker, the state tensors arrive as handles to the same shared memory.
    """

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, foreach=True)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = {
                    "step": torch.zeros(()).share_memory_(),
                    "exp_avg": torch.zeros_like(p).share_memory_(),
                    "exp_avg_sq": torch.zeros_like(p).share_memory_(),
                }


class SharedRMSprop(torch.optim.RMSprop):
    """torch.optim.RMSprop with its state (`step`, `square_avg`) created up front in shared memory."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, foreach=True)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = {
                    "step": torch.zeros(()).share_memory_(),
                    "square_avg": torch.zeros_like(p).share_memory_(),
                }


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pull_weights(local, shared):
    with torch.no_grad():
        for lp, sp in zip(local.parameters(), shared.parameters()):
            lp.copy_(sp)


def push_gradients(local, shared, optimizer, loss, max_grad_norm):
    """Backpropagate `loss` through the local network and apply the gradient to the shared network."""
    local.zero_grad(set_to_none=True)  # a fresh gradient, not the sum of all updates so far
    loss.backward()
    nn.utils.clip_grad_norm_(local.parameters(), max_grad_norm)
    for lp, sp in zip(local.parameters(), shared.parameters()):
        # on every update: backward made a new tensor, so an alias made once would go stale
        sp.grad = lp.grad
    optimizer.step()  # no lock: other workers may be updating the same weights (Hogwild!)


def ask_for_long_time_slices(ms=100):
    """With more workers than cores, Linux preempts a running worker every few milliseconds for the
    next (a3c.py's same workers, 8 on 2 cores: 610 involuntary switches/s against 200 with 2), and 8
    workers ran at 0.80-0.85x the steps/s of 2, all of it lost in user time (most likely caches
    refilled after each switch). With 100 ms slices, 8 ran at 1.00x. The request is sched_setattr's
    sched_runtime for SCHED_OTHER, which Linux 6.12 and later take as the task's time slice; where it
    fails, nothing changes."""
    syscall_number = {"x86_64": 314, "aarch64": 274}.get(platform.machine())  # SYS_sched_setattr
    if sys.platform != "linux" or syscall_number is None:
        return
    # struct sched_attr {u32 size, policy; u64 flags; s32 nice; u32 priority; u64 runtime, deadline, period; u32 util_min, util_max}
    attr = struct.pack("IIQiIQQQII", 56, os.SCHED_OTHER, 0, os.getpriority(os.PRIO_PROCESS, 0), 0, ms * 1_000_000, 0, 0, 0, 0)
    ctypes.CDLL(None, use_errno=True).syscall(syscall_number, 0, attr, 0)


def worker(rank, args, policy, value, policy_opt, value_opt, global_step, stop, messages):
    """Entry point of a worker process; reports ("episode", ...) and ("error", rank, traceback) to main."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is main's to handle; it stops us through `stop`
    torch.set_num_threads(1)
    ask_for_long_time_slices()
    try:
        train(rank, args, policy, value, policy_opt, value_opt, global_step, stop, messages)
    except Exception:
        messages.put(("error", rank, traceback.format_exc()))
        sys.exit(1)


def train(rank, args, policy, value, policy_opt, value_opt, global_step, stop, messages):
    seed_everything(args.seed + rank)
    env = gym.make(args.env_id)
    local_policy, local_value = make_networks(env.observation_space.shape[0], env.action_space.n, args)
    parent = multiprocessing.parent_process()
    obs = np.asarray(env.reset(seed=args.seed + rank)[0], dtype=np.float32)
    episode_return, episode_length = 0.0, 0
    while not stop.value and global_step.value < args.total_timesteps and parent.is_alive():
        pull_weights(local_policy, policy)
        pull_weights(local_value, value)
        observations, actions, rewards = [], [], []
        with torch.no_grad():
            for _ in range(args.n_steps):
                probs = F.softmax(local_policy(torch.from_numpy(obs)), dim=-1).numpy()
                # inverse-CDF sampling, a = #{k : P(A <= k) <= u} with u ~ U(0, 1), at a tenth of the cost of
                # Categorical; min() guards against a cumulative sum that rounds to just below u
                action = min(int((probs.cumsum() <= np.random.random()).sum()), len(probs) - 1)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                observations.append(obs)
                actions.append(action)
                rewards.append(float(reward))
                obs = np.asarray(next_obs, dtype=np.float32)
                episode_return, episode_length = episode_return + float(reward), episode_length + 1
                if terminated or truncated:
                    break
            # a time limit is not a terminal state: bootstrap from V(final observation)
            bootstrap = 0.0 if terminated else local_value(torch.from_numpy(obs)).item()

        # the log-probabilities and values come from one batched pass over the rollout (same weights as acting)
        obs_batch = torch.from_numpy(np.stack(observations))
        log_probs = F.log_softmax(local_policy(obs_batch), dim=-1)
        log_prob = log_probs.gather(1, torch.tensor(actions)[:, None]).squeeze(1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
        values = local_value(obs_batch).squeeze(1)
        # a rollout stops at the end of an episode, so only its last step can be terminal or truncated
        # (compute_gae itself handles ends anywhere); V(s_{t+1}) of the last step is the bootstrap
        v = values.detach().numpy()
        next_values, terms, ends = np.append(v[1:], bootstrap), np.zeros_like(v), np.zeros_like(v)
        terms[-1], ends[-1] = terminated, terminated or truncated
        advantages = torch.from_numpy(compute_gae(rewards, v, next_values, terms, ends, args.gamma, args.gae_lambda))
        returns = advantages + values.detach()  # the lambda-return, target of the value network
        # no gamma^t factor on the policy loss, as in practically every implementation: the policy-gradient
        # theorem weighs step t by gamma^t counted from the episode's start, which would all but silence late
        # steps; the seed counts t from each rollout's start, which matches neither that nor common practice
        policy_loss = -(advantages * log_prob).mean()
        value_loss = 0.5 * (returns - values).pow(2).mean()
        push_gradients(local_policy, policy, policy_opt, policy_loss - args.ent_coef * entropy, args.max_grad_norm)
        push_gradients(local_value, value, value_opt, value_loss, args.max_grad_norm)
        losses = (policy_loss.item(), value_loss.item(), entropy.item())

        with global_step.get_lock():
            global_step.value += len(rewards)
            step = global_step.value
        if terminated or truncated:
            messages.put(("episode", episode_return, episode_length, step, losses))
            obs = np.asarray(env.reset()[0], dtype=np.float32)
            episode_return, episode_length = 0.0, 0
    env.close()
    if not parent.is_alive():  # nobody will read what is still queued: exit without waiting to flush it
        messages.cancel_join_thread()


def fail(message):
    """A user error: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args):
    """Reject what this script cannot run before anything is written; return (observation size, actions)."""
    for name in ("total_timesteps", "n_workers", "n_steps", "eval_episodes"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not all(size > 0 for size in (*args.policy_hidden, *args.value_hidden)):
        fail("--policy-hidden and --value-hidden sizes must be positive")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    if not 0 <= args.gae_lambda <= 1:
        fail(f"--gae-lambda must be in [0, 1], got {args.gae_lambda}")
    if args.learning_rate <= 0 or args.value_learning_rate <= 0 or args.max_grad_norm <= 0:
        fail("--learning-rate, --value-learning-rate and --max-grad-norm must be positive")
    if args.start_method not in (None, *multiprocessing.get_all_start_methods()):
        fail(f"--start-method must be one of {', '.join(multiprocessing.get_all_start_methods())}, got {args.start_method}")
    try:
        env = gym.make(args.env_id)
    except Exception as error:  # unknown id, or a "module:Env-v0" id whose module does not import
        fail(f"cannot make environment {args.env_id!r}: {error}")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        space = type(env.action_space).__name__
        fail(f"{args.env_id}: {space} action space is not supported; gae.py needs Discrete actions")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        fail(f"{args.env_id} has observations {env.observation_space}; gae.py needs a flat Box")
    if args.target_return is None:
        args.target_return = env.spec.reward_threshold
    env.close()
    if args.capture_video and importlib.util.find_spec("moviepy") is None:  # gymnasium's RecordVideo writes through it
        fail("--capture-video needs moviepy: pip install moviepy")
    return env.observation_space.shape[0], int(env.action_space.n)


def load_checkpoint(path, args):
    if not os.path.isfile(path):
        fail(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")
    script = checkpoint.get("script") if isinstance(checkpoint, dict) else None
    if script != "gae.py":
        fail(f"{path} is not a gae.py checkpoint (script: {script})")
    trained_on = checkpoint["args"]["env_id"]
    if trained_on != args.env_id:
        fail(f"{path} was trained on {trained_on}, not {args.env_id} (pass --env-id {trained_on})")
    return checkpoint


def evaluate(policy, args, video_dir):
    """Greedy policy (argmax of the logits) on a fresh environment; returns the episode returns."""
    if args.capture_video:
        env = gym.make(args.env_id, render_mode="rgb_array")
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True)
    else:
        env = gym.make(args.env_id)
    episode_returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 100_000 if episode == 0 else None)  # a seed no worker trains on
        episode_return, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = policy(torch.as_tensor(obs, dtype=torch.float32)).argmax().item()
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return, done = episode_return + float(reward), terminated or truncated
        episode_returns.append(episode_return)
    env.close()
    return episode_returns


class Progress:
    """A live bar on a terminal; one plain line every 10 s otherwise (logs, CI)."""

    def __init__(self, total):
        self.bar = None
        self.last_print = time.time()
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            columns = TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            self.bar = Bar(*columns, TextColumn("{task.fields[stats]}"))
            self.task = self.bar.add_task("train", total=total, stats="")
            self.bar.start()

    def update(self, step, sps, mean_return):
        stats = f"SPS {sps}  return(100) {mean_return:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)
        elif time.time() - self.last_print >= 10:
            print(f"step {step}  {stats}", flush=True)
            self.last_print = time.time()

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def drain(messages, timeout=0.05):
    """Yield the queued messages until none arrives for `timeout` seconds."""
    try:
        while True:
            yield messages.get(timeout=timeout)
    except queue.Empty:
        return


def stop_workers(procs, stop, messages, grace=5.0):
    """Tell the workers to stop and wait for them, draining the queue (a worker exits only once its queued
    messages are flushed); terminate any still alive after `grace` seconds."""
    stop.value = 1
    deadline = time.time() + grace
    while any(p.is_alive() for p in procs) and time.time() < deadline:
        for _ in drain(messages):
            pass
    for p in procs:
        if p.is_alive():
            p.terminate()
        p.join()


def main():
    start_time = time.time()
    args = tyro.cli(Args)
    obs_dim, n_actions = check_args(args)
    seed_everything(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # small MLPs, and one process per core already

    if args.eval_checkpoint:
        checkpoint = load_checkpoint(args.eval_checkpoint, args)
        policy = mlp(obs_dim, checkpoint["args"]["policy_hidden"], n_actions)
        policy.load_state_dict(checkpoint["model"]["policy"])
        returns = evaluate(policy, args, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return

    policy, value = make_networks(obs_dim, n_actions, args)
    policy.share_memory()
    value.share_memory()
    policy_opt = SharedAdam(policy.parameters(), lr=args.learning_rate)
    value_opt = SharedRMSprop(value.parameters(), lr=args.value_learning_rate)
    ctx = mp.get_context(args.start_method)
    if ctx.get_start_method() == "forkserver":  # import once in the server what every worker needs, not in each
        ctx.set_forkserver_preload(["__main__", "torch._dynamo"])  # torch.optim's step imports torch._dynamo
    global_step, stop, messages = ctx.Value("q", 0), ctx.Value("b", 0, lock=False), ctx.Queue()
    shared = (args, policy, value, policy_opt, value_opt, global_step, stop, messages)
    procs = [ctx.Process(target=worker, args=(i, *shared), daemon=True) for i in range(args.n_workers)]
    # the workers inherit SIGINT ignored, so that a Ctrl-C while they start reaches only this process
    sigint_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p in procs:
        p.start()
    signal.signal(signal.SIGINT, sigint_handler)

    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(start_time)}"
    writer, progress, last_update = None, None, 0.0
    episodes, solved_at_step, solved_at_s, error, interrupted = 0, None, None, None, False
    recent_returns, solved_weights = deque(maxlen=100), None
    try:
        # imported and started after the fork: fork copies no threads, so a running writer thread must not exist yet
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(run_dir)
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
        progress = Progress(args.total_timesteps)
        while True:
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                message = None
                if all(p.exitcode is not None for p in procs):  # every worker used up the budget or stopped
                    break
            if message is not None and message[0] == "error":
                error = f"worker {message[1]} failed:\n{message[2].rstrip()}"
                break
            if message is not None:
                _, episode_return, episode_length, step, (policy_loss, value_loss, entropy) = message
                episodes += 1
                recent_returns.append(episode_return)
                writer.add_scalar("charts/episodic_return", episode_return, step)
                writer.add_scalar("charts/episodic_length", episode_length, step)
                writer.add_scalar("losses/policy_loss", policy_loss, step)
                writer.add_scalar("losses/value_loss", value_loss, step)
                writer.add_scalar("losses/entropy", entropy, step)
                full = len(recent_returns) == 100 and args.target_return is not None
                if full and np.mean(recent_returns) >= args.target_return and solved_at_step is None:
                    solved_at_step, solved_at_s = step, time.time() - start_time
                    if args.stop_at_target:
                        stop.value = 1
                        # the workers still apply the updates they have in flight, and a few updates can
                        # undo a solved policy: evaluate and save the weights that reached the target
                        solved_weights = [{k: v.clone() for k, v in net.state_dict().items()} for net in (policy, value)]
            if time.time() - last_update >= 0.5:
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:  # report its own error message if it sent one, else its exit code (-N: killed by signal N)
                    error = f"worker {dead[0][0]} died with exit code {dead[0][1]}"
                    error = next((f"worker {m[1]} failed:\n{m[2].rstrip()}" for m in drain(messages) if m[0] == "error"), error)
                    break
                last_update, step = time.time(), global_step.value
                sps = int(step / (last_update - start_time))
                progress.update(step, sps, np.mean(recent_returns) if recent_returns else 0.0)
                writer.add_scalar("charts/SPS", sps, step)
    except KeyboardInterrupt:
        interrupted = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # from here on a Ctrl-C would only lose the model and summary
    if progress is not None:
        progress.close()
    stop_workers(procs, stop, messages)
    if solved_weights is not None:
        policy.load_state_dict(solved_weights[0])
        value.load_state_dict(solved_weights[1])
    if writer is None:  # Ctrl-C before the run directory was written: nothing to save
        sys.exit(130)
    if error is not None:
        writer.close()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    wall_time_s = time.time() - start_time
    global_step = global_step.value

    eval_returns = []
    if not interrupted:
        eval_returns = evaluate(policy, args, os.path.join(run_dir, "videos"))
        for i, episode_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episode_return, i)
    model_path = None
    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
        model = {"policy": policy.state_dict(), "value": value.state_dict()}
        torch.save({"script": "gae.py", "model": model, "args": vars(args)}, model_path + ".tmp")
        os.replace(model_path + ".tmp", model_path)
    summary = {
        "script": "gae.py",
        "env_id": args.env_id,
        "seed": args.seed,
        "global_step": global_step,
        "episodes": episodes,
        "wall_time_s": round(wall_time_s, 3),
        "sps": int(global_step / wall_time_s),
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
    except KeyboardInterrupt:  # Ctrl-C before the workers started: nothing written yet
        sys.exit(130)
