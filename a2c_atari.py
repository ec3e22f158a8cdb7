"""Advantage actor-critic (A2C) on Atari from pixels, on ALE's vectorized C++ environment.

The synchronous A2C of `a2c.py` (Mnih et al. 2016, https://arxiv.org/abs/1602.01783) with the
Nature-DQN convolutional body (Mnih et al. 2015) and two heads, policy logits and state value, as in
the seed notebook "The Actor-Critic Method" (Deep RL Hands-On, A2C on Pong). `n_envs` games step in
lockstep inside `ale_py.vector_env.AtariVectorEnv` (C++ threads, with the standard preprocessing:
frame skip 4 with max-pooling, 84x84 grayscale, 4-frame stack, up to 30 no-ops and FIRE at reset, no
sticky actions). After `n_steps` steps the learner computes n-step returns on sign-clipped rewards,

    R_t = sign(r_t) + gamma * R_{t+1},    R_T = V(s_T),

and takes one gradient step on

    loss = -mean(A_t * log pi(a_t|s_t)) + vf_coef * mean((R_t - V(s_t))^2) - ent_coef * H[pi],
    A_t  = R_t - V(s_t)  (no gradient through A_t in the policy term).

Run it:
    python a2c_atari.py                                   # Pong until the mean of 100 games >= 18
    python a2c_atari.py --resume runs/.../a2c_atari.pt    # continue an interrupted run
    python a2c_atari.py --eval-checkpoint runs/.../a2c_atari.pt --capture-video

Every agent step costs one forward pass and, at the update, one backward pass: the rollout's
forward passes keep their autograd graph and the update backpropagates through them, where the seed
runs the network a second time over the batch (and calls backward twice). The only extra forward is
V(s_T) for the bootstrap, one batch per rollout. The 3136x512 layer's weight gradient is one product
over the rollout's rows (`DeferredGradLinear`), not one per step: 1,073-1,113 agent steps/s against
887-904 on 2 cores. Where the CPU (AVX-512 BF16, AMX) or the GPU computes bfloat16 natively, the
rollout and the backward pass run on a copy of the network whose convolutional body is bfloat16,
refreshed after each update (heads, losses, the gradients Adam sees and the saved weights stay
float32; `--no-bf16` turns it off): 1,679-1,782 agent steps/s against 1,375 in float32, 16 x 5.

Defaults. The seed's values (Adam lr 1e-3 with eps 1e-3, gradient norm clipped at 0.1, 4-step
returns, 128 transitions per update, run here as 32 games x 4 steps) did not learn here: after 1.34M
agent steps the policy's entropy was still ln 6 = 1.79 (uniform over Pong's 6 actions) and the mean
score -20.3. The likely cause: clipped to a norm of 0.1 over 1.7M parameters, a gradient entry is
~1e-4, far below eps = 1e-3, so Adam turns into SGD with tiny steps. So the optimizer follows OpenAI
baselines' A2C (clip 0.5, entropy 0.01, value loss 0.5 * MSE) with Adam, lr 1e-3 and eps 1e-5, in
place of its RMSprop 7e-4, and keeps the seed's rollout of 32 games x 4 steps, in bfloat16: 2.74x
the throughput of SB3's A2C side by side, and seed 1 reached a mean score of 18 over 100 games at
3.77M agent steps (35 minutes on 2 cores) and seed 2 at 3.65M (README). Baselines' 16 games x 5
steps learned faster in float32 (18 at 2.24M and 3.15M) but ran at 1.67x SB3, and 2.23x in
bfloat16; other bfloat16 shapes with 32 games stood at 13.7-17.6 at 4M steps, and lr 2e-3 killed
the first convolution (dying ReLUs).
Kept from the seed: the two-headed network on a shared body and the entropy bonus. Differences from
the seed's listing: a truncated game (the 108,000-frame limit) bootstraps from the value of its last
frame instead of counting as a loss of all future reward, and the episode return logged is the raw
game score while learning uses sign-clipped rewards. The emulators cannot be saved, so `--resume`
restores the model, the optimizer, the step count and the last 100 scores and starts fresh games.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "torch==2.13.0",
#     "gymnasium==1.4.0",
#     "ale-py==0.12.1",
#     "numpy==2.4.6",
#     "tyro==1.0.17",
#     "tensorboard==2.21.0",
#     "rich==15.0.0",
# ]
# ///
import copy
import json
import os
import random
import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

# After each parallel region torch's OpenMP threads spin 300,000 times by default before they sleep,
# and spinning through env.step they take the cores from ALE's threads (README: 30,000 measured
# faster on 2 cores). Set before torch loads libgomp.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.distributions import Categorical


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run directory's name)"""
    seed: int = 1
    """seed of the experiment; game i is seeded with seed + i"""
    torch_deterministic: bool = True
    """make cuDNN deterministic"""
    cuda: bool = True
    """train on the GPU when there is one"""
    bf16: bool = True
    """compute the network's body in bfloat16 where the CPU (AVX-512 BF16, AMX) or GPU does so natively; Adam updates float32 weights (--no-bf16: float32 throughout)"""
    env_id: str = "PongNoFrameskip-v4"
    """Atari game: a gymnasium id (PongNoFrameskip-v4, ALE/Breakout-v5) or an ALE ROM name (ms_pacman)"""
    total_timesteps: int = 10_000_000
    """budget of agent steps (4 frames each), summed over all games"""
    n_envs: int = 32
    """number of games stepped in lockstep"""
    n_steps: int = 4
    """steps per game in each rollout (the n of the n-step return)"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    adam_eps: float = 1e-5
    """Adam epsilon (the seed's 1e-3 made the updates too small to learn, see the docstring)"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    ent_coef: float = 0.01
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss (mean squared error)"""
    max_grad_norm: float = 0.5
    """maximum global norm of the gradient"""
    target_return: Optional[float] = None
    """mean score over the last 100 training games that counts as solved (default: 18 for Pong, else none)"""
    stop_at_target: bool = True
    """stop training once the target is reached"""
    eval_episodes: int = 10
    """games of greedy evaluation after training (played in parallel)"""
    capture_video: bool = False
    """record the first evaluation game as the agent sees it (84x84) to videos/ (needs moviepy)"""
    save_model: bool = True
    """save the model to the run directory"""
    checkpoint_interval_s: float = 300.0
    """seconds between checkpoints during training (model, optimizer and progress, for --resume)"""
    resume: Optional[str] = None
    """continue the run saved in this checkpoint (its arguments, except --total-timesteps, --cuda and --bf16)"""
    eval_checkpoint: Optional[str] = None
    """evaluate this saved model instead of training"""


def fail(message: str):
    """A user error: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def rom_name(env_id: str) -> str:
    """PongNoFrameskip-v4, ALE/Pong-v5, Pong or pong -> the ALE ROM name pong."""
    name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", env_id.removeprefix("ALE/"))
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def make_env(args: Args, n_envs: int):
    """n_envs games with the standard Atari preprocessing, done in C++. Raw rewards: learning clips
    them itself so that the logged episode return is the game score."""
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(rom_name(args.env_id), n_envs, autoreset_mode="SameStep", reward_clipping=False)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


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


class DeferredGradLinear(nn.Linear):
    """nn.Linear whose weight gradient is one matrix product over the whole rollout.

    Backpropagating through the rollout's forward passes one by one computes dL/dW = g_t^T x_t
    (g_t = dL/dy_t) for each step's n_envs rows; for the 3136x512 layer that cost 245 us per agent
    step in batches of 16 against 58 in one batch of 80. So autograd carries only dL/dx and dL/db
    through this layer, and after loss.backward() `accumulate_weight_grad` sets
    dL/dW = [g_1; ...; g_T]^T [x_1; ...; x_T], the same sum in one product.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.pending = []  # (x_t, g_t) of each forward pass since the last update, in backward order

    def forward(self, x):
        out = F.linear(x, self.weight.detach(), self.bias)
        if torch.is_grad_enabled():
            out.register_hook(lambda grad_out: self.pending.append((x.detach(), grad_out)))
        return out

    def accumulate_weight_grad(self):
        inputs, grad_outputs = (torch.cat(rows) for rows in zip(*self.pending))
        self.pending.clear()
        self.weight.grad = grad_outputs.T @ inputs


class ActorCritic(nn.Module):
    """Nature-DQN body on 4 stacked 84x84 frames (uint8), two heads: policy logits and state value."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.body = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(DeferredGradLinear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.policy_head = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(512, 1), std=1.0)

    def forward(self, obs):
        # uint8 frames travel to the device as bytes; channels-last convolutions are faster on CPU.
        # The heads compute in float32 whatever the body's type: logits and values keep full precision.
        frames = obs.contiguous(memory_format=torch.channels_last).to(self.body[0].weight.dtype).div_(255.0)
        hidden = self.body(frames).float()
        return self.policy_head(hidden), self.value_head(hidden).squeeze(-1)

    def accumulate_weight_grad(self):
        """After loss.backward(): the gradient the fully connected layer deferred (DeferredGradLinear)."""
        self.body[7].accumulate_weight_grad()


class Progress:
    """A live bar on a terminal; one plain line every 10 s otherwise (logs, CI)."""

    def __init__(self, total: int, completed: int):
        self.bar = None
        self.last_print = time.time()
        if sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
            self.task = self.bar.add_task("train", total=total, completed=completed, stats="")
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
    for name in ("total_timesteps", "n_envs", "n_steps", "eval_episodes", "checkpoint_interval_s"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    if args.learning_rate <= 0 or args.max_grad_norm <= 0 or args.adam_eps <= 0:
        fail("--learning-rate, --adam-eps and --max-grad-norm must be positive")
    import ale_py

    if rom_name(args.env_id) not in ale_py.roms.get_all_rom_ids():
        fail(f"{args.env_id!r} is not an Atari game ALE knows (try PongNoFrameskip-v4, ALE/Breakout-v5 or a ROM name such as ms_pacman); a2c.py handles vector observations such as CartPole-v1")
    if args.target_return is None and rom_name(args.env_id) == "pong":
        args.target_return = 18.0
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's save_video writes through it)
        except ImportError:
            fail("--capture-video needs moviepy: pip install moviepy")


def load_checkpoint(path: str, env_id: Optional[str] = None):
    if not os.path.isfile(path):
        fail(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != "a2c_atari.py":
        fail(f"{path} is not an a2c_atari.py checkpoint (script: {checkpoint.get('script') if isinstance(checkpoint, dict) else None})")
    if env_id is not None and rom_name(checkpoint["args"]["env_id"]) != rom_name(env_id):
        fail(f"{path} was trained on {checkpoint['args']['env_id']}, not {env_id} (pass --env-id {checkpoint['args']['env_id']})")
    return checkpoint


def save_atomically(obj, path: str):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def evaluate(model, args: Args, device, video_dir: str = ""):
    """One greedy game (argmax of the logits) in each of eval_episodes parallel games; their scores."""
    envs = make_env(args, args.eval_episodes)
    obs, _ = envs.reset(seed=args.seed + 100_000)
    scores = np.full(args.eval_episodes, np.nan)
    frames = []
    while np.isnan(scores).any():
        if args.capture_video and np.isnan(scores[0]):
            frames.append(np.repeat(obs[0, -1][..., None], 3, axis=-1))  # newest frame of game 0
        with torch.no_grad():
            logits, _ = model(torch.as_tensor(obs, device=device))
        obs, _, _, _, info = envs.step(logits.argmax(-1).cpu().numpy())
        if "episode" in info:
            finished = info["_episode"] & np.isnan(scores)
            scores[finished] = info["episode"]["r"][finished]
    envs.close()
    if frames:
        from gymnasium.utils.save_video import save_video

        save_video(frames, video_dir, fps=15, name_prefix="eval")
    return scores.tolist()


def main():
    start_time = time.time()
    args = tyro.cli(Args)
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        args = Args(**{**checkpoint["args"], "total_timesteps": args.total_timesteps, "cuda": args.cuda, "bf16": args.bf16, "resume": args.resume})
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    if args.eval_checkpoint:
        checkpoint = load_checkpoint(args.eval_checkpoint, args.env_id)
        model = ActorCritic(len(checkpoint["model"]["policy_head.bias"])).to(device).to(memory_format=torch.channels_last)
        model.load_state_dict(checkpoint["model"])
        scores = evaluate(model, args, device, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(scores):.1f} ± {np.std(scores):.1f} over {len(scores)} episodes")
        return

    envs = make_env(args, args.n_envs)
    model = ActorCritic(envs.single_action_space.n).to(device).to(memory_format=torch.channels_last)
    # fused: one kernel per step instead of a dozen passes over the 1.7M parameters (0.036 against 0.076 ms per agent step on 2 cores)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    global_step, episodes, solved_at_step, solved_at_s = 0, 0, None, None
    recent_returns = deque(maxlen=100)
    run_dir = f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(start_time)}"
    if args.resume:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        global_step, episodes, run_dir = checkpoint["global_step"], checkpoint["episodes"], checkpoint["run_dir"]
        recent_returns.extend(checkpoint["recent_returns"])
        start_time -= checkpoint["wall_time_s"]  # wall time counts on from where the run stopped
    # Mixed precision: the rollout and the backward pass run on a copy of the network whose body is
    # bfloat16, refreshed after each update; Adam updates the float32 weights, which are saved.
    compute_model, weight_copies = model, []
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if args.bf16 and native_bf16:
        compute_model = copy.deepcopy(model)
        compute_model.body.to(torch.bfloat16)
        weight_copies = list(zip(model.parameters(), compute_model.parameters()))
    obs, _ = envs.reset(seed=args.seed + global_step)  # game i gets seed + i; a resumed run new games
    next_obs = torch.as_tensor(obs, device=device)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir)  # on --resume, a new events file in the same directory
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt")

    def checkpoint_state():
        return {
            "script": "a2c_atari.py",
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "args": vars(args),
            "global_step": global_step,
            "episodes": episodes,
            "recent_returns": list(map(float, recent_returns)),
            "run_dir": run_dir,
            "wall_time_s": time.time() - start_time,
        }

    resumed_step, resumed_time = global_step, time.time()
    last_checkpoint = time.time()
    interrupted = False
    progress = Progress(args.total_timesteps, global_step)
    try:
        while global_step < args.total_timesteps:
            log_probs, values, entropies, rewards, dones, bootstrap_values = [], [], [], [], [], []
            for _ in range(args.n_steps):
                logits, value = compute_model(next_obs)  # keeps its graph: the update backpropagates through it
                policy = Categorical(logits=logits, validate_args=False)
                action = policy.sample()
                obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
                global_step += args.n_envs
                log_probs.append(policy.log_prob(action))
                values.append(value)
                entropies.append(policy.entropy())
                rewards.append(np.sign(reward))
                dones.append(terminated | truncated)
                # a truncated game continues beyond the frame limit: bootstrap from V(final_obs)
                bootstrap = np.zeros(args.n_envs, dtype=np.float32)
                cut_short = truncated & ~terminated
                if cut_short.any():
                    with torch.no_grad():
                        bootstrap[cut_short] = compute_model(torch.as_tensor(info["final_obs"][cut_short], device=device))[1].cpu().numpy()
                bootstrap_values.append(bootstrap)
                next_obs = torch.as_tensor(obs, device=device)

                for i in np.flatnonzero(info.get("_episode", [])):
                    episodes += 1
                    recent_returns.append(float(info["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
                    if (
                        args.target_return is not None
                        and len(recent_returns) == 100
                        and np.mean(recent_returns) >= args.target_return
                        and solved_at_step is None
                    ):
                        solved_at_step, solved_at_s = global_step, time.time() - start_time

            if args.stop_at_target and solved_at_step is not None:
                break  # keep the model that reached the target
            with torch.no_grad():
                last_value = compute_model(next_obs)[1]
            rewards, dones, bootstrap_values = (torch.as_tensor(np.stack(rows), device=device) for rows in (rewards, dones, bootstrap_values))
            returns = nstep_returns(rewards.float(), dones, bootstrap_values, last_value, args.gamma).flatten()
            log_probs, values, entropy = torch.cat(log_probs), torch.cat(values), torch.cat(entropies).mean()
            advantages = (returns - values).detach()
            policy_loss = -(advantages * log_probs).mean()
            value_loss = (returns - values).pow(2).mean()
            loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy
            compute_model.zero_grad()
            loss.backward()
            compute_model.accumulate_weight_grad()
            for param, compute_param in weight_copies:
                param.grad = compute_param.grad.float()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                for param, compute_param in weight_copies:
                    compute_param.copy_(param)

            sps = int((global_step - resumed_step) / (time.time() - resumed_time))
            progress.update(global_step, sps, np.mean(recent_returns) if recent_returns else 0.0)
            if global_step % (args.n_envs * args.n_steps * 100) == 0:
                writer.add_scalar("losses/policy_loss", policy_loss.item(), global_step)
                writer.add_scalar("losses/value_loss", value_loss.item(), global_step)
                writer.add_scalar("losses/entropy", entropy.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
            if args.save_model and time.time() - last_checkpoint >= args.checkpoint_interval_s:
                save_atomically(checkpoint_state(), model_path)
                last_checkpoint = time.time()
    except KeyboardInterrupt:
        interrupted = True
    progress.close()
    envs.close()
    train_time_s = time.time() - resumed_time

    eval_scores = []
    if not interrupted:
        eval_scores = evaluate(model, args, device, os.path.join(run_dir, "videos"))
        for i, score in enumerate(eval_scores):
            writer.add_scalar("eval/episodic_return", score, i)
    if args.save_model:
        save_atomically(checkpoint_state(), model_path)
    else:
        model_path = None
    wall_time_s = time.time() - start_time
    summary = {
        "script": "a2c_atari.py",
        "env_id": args.env_id,
        "seed": args.seed,
        "global_step": global_step,
        "episodes": episodes,
        "wall_time_s": round(wall_time_s, 3),
        "sps": int((global_step - resumed_step) / train_time_s),
        "target_return": args.target_return,
        "solved": solved_at_step is not None,
        "solved_at_step": solved_at_step,
        "solved_at_s": None if solved_at_s is None else round(solved_at_s, 3),
        "train_return_mean100": float(np.mean(recent_returns)) if recent_returns else None,
        "eval_return_mean": float(np.mean(eval_scores)) if eval_scores else None,
        "eval_return_std": float(np.std(eval_scores)) if eval_scores else None,
        "eval_episodes": len(eval_scores),
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
