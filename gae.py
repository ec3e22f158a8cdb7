"""A3C with generalized advantage estimation: Hogwild! workers, a shared optimizer, GAE(lambda).

Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(eq. 16), on A3C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning"), lock-free as
in Niu et al. 2011, "HOGWILD!". Each of `n_workers` processes copies the shared weights into its local
network, acts in its own environment for up to `n_steps` steps (fewer if the episode ends), computes the
gradient of  mean_t [-A_t log pi(a_t|s_t) - ent_coef H[pi(.|s_t)] + vf_coef (G_t - V(s_t))^2 / 2]  with

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)   (a time limit bootstraps),
    A_t = delta_t + gamma lambda (1 - done_t) A_{t+1} = sum_k (gamma lambda)^k delta_{t+k},
    G_t = A_t + V(s_t), the lambda-return; A_t and G_t held constant,

and steps a shared Adam (its state, `step` included, in shared memory) with no lock. lambda = 1 gives
a3c.py's n-step advantage and target, lambda = 0 the one-step TD error. Everything else is a3c.py's:
the main process logs, stops, evaluates and saves; Discrete actions get a categorical policy, Box
actions a diagonal Gaussian with a log-std parameter; observations and rewards are normalized by
running statistics shared by the workers and kept in the checkpoint; one set of defaults (a3c.py's,
plus lambda = 0.95) serves both kinds of action space, as docs/gae.md reports; and `--lstm`.

    python gae.py --n-workers 8                          # CartPole-v1 until solved, evaluate, save
    python gae.py --env-id InvertedPendulum-v5 --gae-lambda 1.0     # a3c.py's advantages
    python gae.py --eval-checkpoint runs/.../gae.pt --capture-video

Siblings: `a3c.py` is this script with n-step advantages; `a2c.py` the synchronous version.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = ["torch==2.13.0", "gymnasium[classic-control,mujoco]==1.4.0", "numpy==2.4.6", "tyro==1.0.17", "tensorboard==2.21.0"]
# ///
import copy
import importlib.util
import json
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Independent, Normal


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (names the run directory and the checkpoint)"""
    seed: int = 1
    """seed of the experiment; worker i uses seed + i"""
    torch_deterministic: bool = True
    """set `torch.backends.cudnn.deterministic` (A3C stays nondeterministic: workers race)"""
    env_id: str = "CartPole-v1"
    """the id of a gymnasium environment with a flat observation and Discrete or 1-D Box actions"""
    total_timesteps: int = 500_000
    """environment steps, summed over all workers, after which training stops"""
    n_workers: int = 8
    """worker processes, each with its own environment and local network"""
    n_steps: int = 32
    """steps per update (t_max); fewer if the episode ends first"""
    learning_rate: float = 7e-4
    """learning rate of the shared Adam"""
    hidden: tuple[int, ...] = (64, 64)
    """hidden layer sizes of the actor and of the critic (two separate networks)"""
    lstm: bool = False
    """an LSTM cell between each network's hidden layers and its output layer, for partially observed environments"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of GAE, in [0, 1]: 0 gives one-step TD errors, 1 a3c.py's n-step advantages"""
    ent_coef: float = 0.0
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """clip the local gradient to this norm"""
    target_return: Optional[float] = None
    """mean return of the last 100 training episodes that counts as solved (default: the env's reward_threshold)"""
    stop_at_target: bool = True
    """stop as soon as the target is reached"""
    eval_episodes: int = 10
    """greedy evaluation episodes at the end of training"""
    capture_video: bool = False
    """record the evaluation episodes to `videos/` (needs moviepy)"""
    save_model: bool = True
    """save the network and its normalization statistics to the run directory"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model and exit, without training"""


def make_env(env_id, video_dir=None):
    def thunk():
        if video_dir is None:
            return gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
        os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo renders without a display only through EGL
        env = gym.wrappers.RecordVideo(gym.make(env_id, render_mode="rgb_array"), video_dir, episode_trigger=lambda e: True)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def compute_gae(rewards, values, next_values, terminated, dones, gamma, gae_lambda):
    """GAE(gamma, lambda) advantages of one rollout, per step t: `next_values[t]` is V(s_{t+1}), V(final observation)
    after a truncation (masked after a termination); `dones[t]`: the episode, and the sum of TD errors, end at t."""
    # A_T = 0: after the rollout only V(s_T) is known, and delta_{T-1} holds it
    advantages, advantage = np.zeros(len(rewards), dtype=np.float32), 0.0
    for t in reversed(range(len(rewards))):
        # delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)       (one-step TD error)
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        # A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}  =  sum_k (gamma * lambda)^k delta_{t+k}
        advantages[t] = advantage = delta + gamma * gae_lambda * (1.0 - dones[t]) * advantage
    return advantages


def gaussian(mean, log_std):
    # pi(a|s) = prod_i N(a_i; mu_i(s), exp(log_std_i)^2): log-probability and entropy summed over dimensions
    return Independent(Normal(mean, log_std.exp()), 1)


def env_action(action, action_space):
    # a Gaussian sample is unbounded: the env gets a clipped copy, training keeps the sample's log-probability
    return np.clip(action.numpy(), action_space.low, action_space.high) if isinstance(action_space, gym.spaces.Box) else action.item()


def update_moments(mean, var, count, batch):
    # fold a batch (rows) into running moments in place, by Chan et al.'s parallel variance formula
    n, delta, total = len(batch), batch.mean(0) - mean, count + len(batch)
    var.copy_((var * count + batch.var(0, unbiased=False) * n + delta**2 * count * n / total) / total)
    mean.add_(delta * n / total)
    count.copy_(total)


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(n_in, hidden, n_out, out_std):
    sizes = (n_in, *hidden)
    layers = [m for a, b in zip(sizes, sizes[1:]) for m in (layer_init(nn.Linear(a, b)), nn.Tanh())]
    return nn.Sequential(*layers, layer_init(nn.Linear(sizes[-1], n_out), std=out_std))


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, continuous, hidden, lstm=False):
        super().__init__()
        self.actor = mlp(obs_dim, hidden, n_actions, out_std=0.01)  # logits, or the Gaussian's mean
        self.critic = mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor_lstm, self.critic_lstm = (nn.LSTMCell(hidden[-1], hidden[-1]) if lstm else None for _ in range(2))
        self.state_size = hidden[-1] if lstm else 0  # without an LSTM the state is empty and passes through
        self.log_std = nn.Parameter(torch.zeros(n_actions)) if continuous else None
        # running moments of the observations and of the discounted return (it scales the rewards): buffers, shared,
        # pulled and saved with the weights
        for name, shape in (("obs", (obs_dim,)), ("ret", ())):
            self.register_buffer(f"{name}_mean", torch.zeros(shape))
            self.register_buffer(f"{name}_var", torch.ones(shape))
            self.register_buffer(f"{name}_count", torch.tensor(1e-4))

    def normalize(self, obs):  # clipped at 10 standard deviations, as in Stable-Baselines3's VecNormalize
        return ((obs - self.obs_mean) / torch.sqrt(self.obs_var + 1e-8)).clamp(-10, 10)

    def initial_state(self):  # (h, c) of the actor's LSTM and of the critic's at the start of an episode
        return torch.zeros(2, 2, self.state_size)

    def unroll(self, net, lstm, obs, state):
        """`net` on consecutive steps (T, obs_dim) of one episode from the LSTM's (h, c) before them; the (h, c) after."""
        if lstm is None:
            return net(self.normalize(obs)), state
        (h, c), outputs = state, []
        for features in net[:-1](self.normalize(obs)):
            h, c = lstm(features, (h, c))  # (h_t, c_t) = LSTMCell(hidden layers(s_t), (h_{t-1}, c_{t-1}))
            outputs.append(h)
        return net[-1](torch.stack(outputs)), torch.stack((h, c))

    def policy(self, obs, state):
        out, state = self.unroll(self.actor, self.actor_lstm, obs, state)
        return (Categorical(logits=out) if self.log_std is None else gaussian(out, self.log_std)), state

    def value(self, obs, state):
        out, state = self.unroll(self.critic, self.critic_lstm, obs, state)
        return out.squeeze(-1), state


class SharedAdam(torch.optim.Adam):
    """torch.optim.Adam with its state (`step` included: Adam's bias correction 1 - beta^step reads it) created up
    front in shared memory, where every update writes in place, not lazily in each process's private memory."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, foreach=True)
        for p in (p for group in self.param_groups for p in group["params"]):
            self.state[p] = {"step": torch.zeros(()).share_memory_(), "exp_avg": torch.zeros_like(p).share_memory_(),
                             "exp_avg_sq": torch.zeros_like(p).share_memory_()}


def push_gradients(local, shared, optimizer, loss, max_grad_norm):
    """Backpropagate `loss` through the local network and apply the gradient to the shared network."""
    local.zero_grad(set_to_none=True)  # a fresh gradient, not the sum of all updates so far
    loss.backward()
    nn.utils.clip_grad_norm_(local.parameters(), max_grad_norm)
    for lp, sp in zip(local.parameters(), shared.parameters()):
        sp.grad = lp.grad  # on every update: backward made a new tensor, so an alias made once would go stale
    optimizer.step()  # no lock: other workers may be updating the same weights (Hogwild!)


def worker(rank, args, agent, optimizer, global_step, stop, messages):
    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)  # the checks cost more than the network
    messages.cancel_join_thread()  # exit without waiting for main to read what is still queued
    torch.manual_seed(args.seed + rank)
    env, local, parent = make_env(args.env_id)(), copy.deepcopy(agent), mp.parent_process()  # local: private memory
    (obs, _), discounted_return, state = env.reset(seed=args.seed + rank), 0.0, local.initial_state()
    while not stop.value and global_step.value < args.total_timesteps and parent.is_alive():
        local.load_state_dict(agent.state_dict())  # the shared weights and statistics, fixed for this rollout
        observations, actions, rewards, discounted_returns = [], [], [], []
        reward_scale = 1.0 / np.sqrt(local.ret_var.item() + 1e-8)  # r / std(discounted return)
        actor_state = state[0]  # the LSTM state is carried over from the last rollout within an episode
        with torch.no_grad():
            for _ in range(args.n_steps):
                observations.append(torch.as_tensor(obs, dtype=torch.float32))
                policy, actor_state = local.policy(observations[-1][None], actor_state)
                actions.append(policy.sample()[0])
                obs, reward, terminated, truncated, info = env.step(env_action(actions[-1], env.action_space))
                discounted_return = args.gamma * discounted_return + float(reward)
                discounted_returns.append(discounted_return)
                rewards.append(float(reward) * reward_scale)
                if terminated or truncated:
                    break

        # the log-probabilities and values come from one pass over the rollout with the weights and, with --lstm, from the
        # LSTM state it started with: those the worker acted with. The update backpropagates through these n steps only.
        obs_batch = torch.stack(observations)
        (policy, actor_state), (values, critic_state) = local.policy(obs_batch, state[0]), local.value(obs_batch, state[1])
        # a time limit is not a terminal state: bootstrap from V(final observation)
        bootstrap = 0.0 if terminated else local.value(torch.as_tensor(obs, dtype=torch.float32)[None], critic_state)[0].item()
        state = torch.stack((actor_state, critic_state)).detach()  # detached: the next update's gradient stops here
        # a rollout stops at the end of an episode, so only its last step can be terminal or truncated
        v = values.detach().numpy()
        next_values, terms, ends = np.append(v[1:], bootstrap), np.zeros_like(v), np.zeros_like(v)
        terms[-1], ends[-1] = terminated, terminated or truncated
        advantages = torch.from_numpy(compute_gae(rewards, v, next_values, terms, ends, args.gamma, args.gae_lambda))
        returns = advantages + values.detach()  # G_t = A_t + V(s_t), the lambda-return: the critic's target
        policy_loss = -(advantages * policy.log_prob(torch.stack(actions))).mean()
        value_loss = 0.5 * (returns - values).pow(2).mean()
        entropy = policy.entropy().mean()
        push_gradients(local, agent, optimizer, policy_loss - args.ent_coef * entropy + args.vf_coef * value_loss, args.max_grad_norm)
        update_moments(agent.obs_mean, agent.obs_var, agent.obs_count, obs_batch)  # lock-free too
        update_moments(agent.ret_mean, agent.ret_var, agent.ret_count, torch.tensor(discounted_returns))
        with global_step.get_lock():
            global_step.value += len(rewards)
            step = global_step.value
        episode = (float(info["episode"]["r"]), int(info["episode"]["l"])) if terminated or truncated else None
        messages.put((step, (policy_loss.item(), value_loss.item(), entropy.item()), episode))
        if episode:  # terminated or truncated: the next episode starts from a zero LSTM state
            (obs, _), discounted_return, state = env.reset(), 0.0, local.initial_state()
    env.close()


def fail(message):  # a user error: one line on stderr, exit code 2
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_args(args):
    """Reject what this script cannot run before anything is written; return (obs size, actions, continuous)."""
    try:
        env = gym.make(args.env_id)
    except Exception as error:  # unknown id, or a "module:Env-v0" id whose module does not import
        fail(f"cannot make environment {args.env_id!r}: {error}")
    obs_space, action_space, threshold = env.observation_space, env.action_space, env.spec.reward_threshold
    env.close()
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        fail(f"{args.env_id} has observations {obs_space}; gae.py needs a flat Box")
    continuous = isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1 and action_space.is_bounded()
    if not continuous and not isinstance(action_space, gym.spaces.Discrete):
        fail(f"{args.env_id} has actions {action_space}; gae.py needs Discrete actions or a 1-D Box with finite bounds")
    for name in ("total_timesteps", "n_workers", "n_steps", "eval_episodes", "learning_rate", "max_grad_norm", "hidden"):
        if min(np.atleast_1d(getattr(args, name))) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    if not 0 <= args.gae_lambda <= 1:
        fail(f"--gae-lambda must be in [0, 1], got {args.gae_lambda}")
    args.target_return = threshold if args.target_return is None else args.target_return  # None: trains its budget
    if args.capture_video and importlib.util.find_spec("moviepy") is None:  # gymnasium's RecordVideo writes through it
        fail("--capture-video needs moviepy: pip install moviepy")
    return obs_space.shape[0], action_space.shape[0] if continuous else int(action_space.n), continuous


def load_agent(path, args, obs_dim, n_actions, continuous):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")  # missing, or not a checkpoint
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != "gae.py":
        fail(f"{path} is not a gae.py checkpoint")
    if (trained_on := checkpoint["args"]["env_id"]) != args.env_id:
        fail(f"{path} was trained on {trained_on}, not {args.env_id} (pass --env-id {trained_on})")
    agent = ActorCritic(obs_dim, n_actions, continuous, checkpoint["args"]["hidden"], checkpoint["args"].get("lstm", False))
    agent.load_state_dict(checkpoint["model"])
    return agent


@torch.no_grad()
def evaluate(agent, args, video_dir):
    """Greedy policy (argmax, or the clipped Gaussian mean) on a fresh environment; returns the episode returns."""
    env, episode_returns = make_env(args.env_id, video_dir if args.capture_video else None)(), []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 100_000 if episode == 0 else None)  # a seed no worker trains on
        terminated, truncated, state = False, False, agent.initial_state()[0]  # the actor's LSTM state, carried through
        while not (terminated or truncated):
            policy, state = agent.policy(torch.as_tensor(obs, dtype=torch.float32)[None], state)
            obs, _, terminated, truncated, info = env.step(env_action(policy.mode[0], env.action_space))  # argmax, or mean
        episode_returns.append(float(info["episode"]["r"]))
    env.close()
    return episode_returns


def main():
    start_time = time.time()
    args = tyro.cli(Args)
    obs_dim, n_actions, continuous = check_args(args)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    if args.eval_checkpoint:
        agent = load_agent(args.eval_checkpoint, args, obs_dim, n_actions, continuous)
        returns = evaluate(agent, args, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
        return

    agent = ActorCritic(obs_dim, n_actions, continuous, args.hidden, args.lstm).share_memory()
    optimizer = SharedAdam(agent.parameters(), lr=args.learning_rate)
    global_step, stop, messages = mp.Value("q", 0), mp.Value("b", 0, lock=False), mp.Queue()  # any start method
    procs = [mp.Process(target=worker, args=(i, args, agent, optimizer, global_step, stop, messages), daemon=True)
             for i in range(args.n_workers)]
    # Ctrl-C, or a SIGTERM to every process of the run (a scheduler's), is main's to handle: it stops the workers
    for signum in (signal.SIGINT, signal.SIGTERM):  # through `stop`; they inherit both ignored, before their first line
        signal.signal(signum, signal.SIG_IGN)
    for p in procs:
        p.start()
    interrupted = []  # Ctrl-C or `kill` only sets a flag (the loop ends; evaluation and saving go on): an exception could break a lock
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: interrupted.append(signum))
    from torch.utils.tensorboard import SummaryWriter  # after the fork: a forked process must not copy its thread

    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(start_time)}"
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    returns, solved_at_step, solved_at_s, last_print = [], None, None, 0.0
    while not stop.value and not interrupted and not any(p.exitcode for p in procs) and any(p.is_alive() for p in procs):
        try:
            step, losses, episode = messages.get(timeout=0.5)
        except queue.Empty:
            continue
        for name, loss in zip(("policy_loss", "value_loss", "entropy"), losses):
            writer.add_scalar(f"losses/{name}", loss, step)
        if episode:
            returns.append(episode[0])
            writer.add_scalar("charts/episodic_return", episode[0], step)
            writer.add_scalar("charts/episodic_length", episode[1], step)
            target = args.target_return
            if solved_at_step is None and target is not None and len(returns) >= 100 and np.mean(returns[-100:]) >= target:
                solved_at_step, solved_at_s = step, time.time() - start_time
                stop.value = args.stop_at_target
        if time.time() - last_print >= (0.5 if sys.stdout.isatty() else 10):
            last_print, sps = time.time(), int(step / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, step)
            print(f"step {step}  SPS {sps}  return(100) {np.mean(returns[-100:] or np.nan):.1f}", end="\r" if sys.stdout.isatty() else "\n", flush=True)
    failed = [f"worker {i} died with exit code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode]  # traceback above
    stop.value, deadline = 1, time.time() + 5
    for p in procs:  # the workers finish their rollout and exit
        p.join(timeout=max(0.0, deadline - time.time()))
    wall_time_s, global_step = time.time() - start_time, global_step.value  # read before a kill: a killed worker may hold its lock
    for p in procs:  # one that has not exited within seconds is killed
        p.kill()
    if failed:
        sys.exit(f"\nerror: {'; '.join(failed)}")

    eval_returns = [] if interrupted else evaluate(agent, args, os.path.join(run_dir, "videos"))
    for i, episode_return in enumerate(eval_returns):
        writer.add_scalar("eval/episodic_return", episode_return, i)
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt") if args.save_model else None
    if model_path:  # written whole or not at all
        torch.save({"script": "gae.py", "model": agent.state_dict(), "args": vars(args)}, model_path + ".tmp")
        os.replace(model_path + ".tmp", model_path)
    summary = dict(script="gae.py", env_id=args.env_id, seed=args.seed, global_step=global_step, episodes=len(returns),
                   wall_time_s=round(wall_time_s, 3), sps=int(global_step / wall_time_s), target_return=args.target_return,
                   solved=solved_at_step is not None, solved_at_step=solved_at_step, solved_at_s=solved_at_s and round(solved_at_s, 3),
                   train_return_mean100=float(np.mean(returns[-100:])) if returns else None,
                   eval_return_mean=float(np.mean(eval_returns)) if eval_returns else None,
                   eval_return_std=float(np.std(eval_returns)) if eval_returns else None,
                   eval_episodes=len(eval_returns), model_path=model_path, interrupted=bool(interrupted))
    Path(run_dir, "summary.json.tmp").write_text(json.dumps(summary, indent=2))
    os.replace(os.path.join(run_dir, "summary.json.tmp"), os.path.join(run_dir, "summary.json"))
    writer.close()
    print(json.dumps(summary))
    sys.exit(128 + interrupted[0] if interrupted else 0)  # 130 after Ctrl-C, 143 after `kill`


if __name__ == "__main__":
    main()
