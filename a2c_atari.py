"""Advantage actor-critic (A2C) on Atari from pixels, on ALE's vectorized C++ environment.

The synchronous A2C of `a2c.py` (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement
Learning", https://arxiv.org/abs/1602.01783) with that paper's convolutional body for Atari (two
convolutions and 256 units) and two heads, policy logits and state value, as in the notebook "The
Actor-Critic Method" (Deep RL Hands-On, A2C on Pong, which uses the larger Nature-DQN body). `n_envs`
games step in lockstep in ALE's `AtariVectorEnv` (C++ threads: frame skip 4 with max-pooling, 84x84
grayscale, 4 stacked frames, up to 30 no-ops and FIRE at reset; sticky actions for `-v5` ids only).
After `n_steps` steps per game, n-step returns on sign-clipped rewards and one gradient step:

    R_t = sign(r_t) + gamma * R_{t+1},  R_T = V(s_T)  (a game cut by the frame limit: V(its last frame))
    loss = -mean(A_t log pi(a_t|s_t)) + vf_coef * mean(A_t^2) - ent_coef * H[pi],  A_t = R_t - V(s_t)
    (no gradient through A_t in the policy term)

    python a2c_atari.py                                   # Pong until the mean of 100 games >= 18
    python a2c_atari.py --resume runs/.../a2c_atari.pt    # continue an interrupted run
    python a2c_atari.py --eval-checkpoint runs/.../a2c_atari.pt --capture-video

Each agent step costs one forward pass: the rollout keeps its autograd graph and the update
backpropagates through it. Defaults: OpenAI baselines' A2C (16 games x 5 steps, entropy 0.01, value
coefficient 0.5, gradient norm 0.5) with Adam (lr 5e-4, eps 1e-5) in float32, the setting whose Pong
runs measured surest (at lr 1e-3 the first convolution went dead, no output positive on any frame, in
some runs); `torch.compile` on the network, `--no-compile` to run without. The logged return is the
game score. Siblings: `a2c.py` (flat observations); docs/a2c_atari.md has the runs.
"""

# /// script
# requires-python = ">=3.10"
# dependencies = ["torch==2.13.0", "gymnasium==1.4.0", "ale-py==0.12.1", "numpy==2.4.6", "tyro==1.0.17",
#                 "tensorboard==2.21.0"]
# ///
import importlib.util
import json
import os
import re
import shutil
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
    """seed of the experiment; game i is seeded with seed + i"""
    torch_deterministic: bool = True
    """make cuDNN deterministic"""
    cuda: bool = True
    """train on the GPU when there is one"""
    env_id: str = "PongNoFrameskip-v4"
    """Atari game: a gymnasium id (PongNoFrameskip-v4; ALE/Breakout-v5 adds sticky actions) or an ALE ROM name (ms_pacman)"""
    total_timesteps: int = 10_000_000
    """budget of agent steps (4 frames each), summed over all games"""
    n_envs: int = 16
    """number of games stepped in lockstep"""
    n_steps: int = 5
    """steps per game in each rollout (the n of the n-step return)"""
    learning_rate: float = 5e-4
    """Adam learning rate"""
    adam_eps: float = 1e-5
    """Adam epsilon"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    ent_coef: float = 0.01
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss (mean squared error)"""
    max_grad_norm: float = 0.5
    """maximum global norm of the gradient"""
    compile: bool = True
    """compile the network with torch.compile (on the CPU it needs a C++ compiler: g++, or the one named in $CXX)"""
    max_episode_frames: int = 108_000
    """frames after which a game is cut short (truncated); 108,000 are 30 minutes of play"""
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
    """continue the run saved in this checkpoint, with its arguments unless given again here"""
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

    envs = AtariVectorEnv(rom_name(args.env_id), n_envs, autoreset_mode="SameStep", reward_clipping=False,
                          max_num_frames_per_episode=args.max_episode_frames,
                          repeat_action_probability=0.25 if args.env_id.endswith("-v5") else 0.0)  # as gymnasium's v5 games
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def nstep_returns(rewards, dones, bootstrap_values, last_value, gamma):
    """R_t = r_t + gamma * R_{t+1} backwards over a (T, n_envs) rollout, R_T = V(s_T); where step t ends
    a game, R_{t+1} is bootstrap_values[t]: 0 after a termination, V(final observation) after a truncation."""
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
    """The A3C paper's body (the DQN network of Mnih et al. 2013) on 4 stacked 84x84 frames (uint8), two heads."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.body = nn.Sequential(
            layer_init(nn.Conv2d(4, 16, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU(),
            nn.Flatten(), layer_init(nn.Linear(32 * 9 * 9, 256)), nn.ReLU(),  # 84x84 -> 20x20 -> 9x9
        )
        self.policy_head = layer_init(nn.Linear(256, n_actions), std=0.01)
        self.value_head = layer_init(nn.Linear(256, 1), std=1.0)

    def forward(self, obs):
        hidden = self.body(obs.float() / 255.0)  # frames travel to the device as bytes
        return self.policy_head(hidden), self.value_head(hidden).squeeze(-1)


def truncation_bootstrap(model, terminated, truncated, final_obs, device):
    """V(last frame) of each game cut by the frame limit, which would have gone on; 0 for the rest
    (a terminated game has no future; a running game's future is R_{t+1} in nstep_returns)."""
    bootstrap = torch.zeros(len(terminated), device=device)
    cut_short = torch.as_tensor(truncated & ~terminated, device=device)
    if cut_short.any():
        with torch.no_grad():
            bootstrap[cut_short] = model(torch.as_tensor(final_obs, device=device)[cut_short])[1]
    return bootstrap


def check_args(args: Args):
    """Reject what this script cannot run before anything is written."""
    for name in ("total_timesteps", "n_envs", "n_steps", "eval_episodes", "max_episode_frames", "checkpoint_interval_s",
                 "learning_rate", "adam_eps", "max_grad_norm"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma must be in (0, 1], got {args.gamma}")
    import ale_py

    if rom_name(args.env_id) not in ale_py.roms.get_all_rom_ids():
        fail(f"{args.env_id!r} is not an Atari game ALE knows (try PongNoFrameskip-v4, ALE/Breakout-v5 or a ROM name such as ms_pacman); a2c.py handles vector observations such as CartPole-v1")
    if args.target_return is None and rom_name(args.env_id) == "pong":
        args.target_return = 18.0
    if args.capture_video and importlib.util.find_spec("moviepy") is None:  # gymnasium's save_video writes through it
        fail("--capture-video needs moviepy: pip install moviepy")
    if args.compile and sys.platform == "linux" and not shutil.which(os.environ.get("CXX", "g++")):
        fail("--compile needs a C++ compiler (g++, or the one named in $CXX): install one, or pass --no-compile")


def load_checkpoint(path: str, env_id: Optional[str] = None):
    if not os.path.isfile(path):
        fail(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"cannot read checkpoint {path}: {error}")
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != "a2c_atari.py":
        fail(f"{path} is not an a2c_atari.py checkpoint")
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
    if args.resume:  # the resumed run's own arguments; flags given now override them
        saved = load_checkpoint(args.resume)
        if "rng_state" not in saved:
            fail(f"{args.resume} was saved by an older a2c_atari.py and cannot be resumed (--eval-checkpoint reads it)")
        args = tyro.cli(Args, default=Args(**{**saved["args"], "resume": args.resume}))
        checkpoint = load_checkpoint(args.resume, args.env_id)
    check_args(args)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    if args.eval_checkpoint:
        checkpoint = load_checkpoint(args.eval_checkpoint, args.env_id)
        model = ActorCritic(len(checkpoint["model"]["policy_head.bias"])).to(device)
        model.load_state_dict(checkpoint["model"])
        scores = evaluate(model, args, device, os.path.join(os.path.dirname(args.eval_checkpoint), "videos"))
        print(f"evaluated {args.eval_checkpoint}: return {np.mean(scores):.1f} ± {np.std(scores):.1f} over {len(scores)} episodes")
        return

    envs = make_env(args, args.n_envs)
    model = ActorCritic(envs.single_action_space.n).to(device)
    if args.compile:
        model.compile()  # in place: the state_dict keeps its keys, so checkpoints load with or without it
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    global_step, episodes, solved_at_step, solved_at_s = 0, 0, None, None
    recent_returns = deque(maxlen=100)
    run_dir = os.path.abspath(f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(start_time)}")
    if args.resume:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        global_step, episodes, run_dir = checkpoint["global_step"], checkpoint["episodes"], checkpoint["run_dir"]
        solved_at_step, solved_at_s = checkpoint["solved_at_step"], checkpoint["solved_at_s"]
        recent_returns.extend(checkpoint["recent_returns"])
        torch.set_rng_state(checkpoint["rng_state"])
        if device.type == "cuda" and checkpoint["cuda_rng_state"] is not None:
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])
        start_time -= checkpoint["wall_time_s"]  # wall time counts on from where the run stopped
    obs, _ = envs.reset(seed=args.seed + global_step)  # game i gets seed + i; a resumed run new games
    next_obs = torch.as_tensor(obs, device=device)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir)  # on --resume, a new events file in the same directory
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt")

    def checkpoint_state():
        return dict(script="a2c_atari.py", model=model.state_dict(), optimizer=optimizer.state_dict(), args=vars(args),
                    global_step=global_step, episodes=episodes, recent_returns=list(map(float, recent_returns)),
                    solved_at_step=solved_at_step, solved_at_s=solved_at_s, run_dir=run_dir,
                    wall_time_s=time.time() - start_time, rng_state=torch.get_rng_state(),
                    cuda_rng_state=torch.cuda.get_rng_state() if device.type == "cuda" else None)

    resumed_step, resumed_time = global_step, time.time()
    last_checkpoint = last_print = time.time()
    # Ctrl-C or `kill` sets a flag the loop reads: an exception raised wherever it lands could cut an update in half
    interrupted = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _: interrupted.append(signum))
    while global_step < args.total_timesteps and not interrupted:
        log_probs, values, entropies, rewards, dones, bootstrap_values = [], [], [], [], [], []
        for _ in range(args.n_steps):
            logits, value = model(next_obs)  # keeps its graph: the update backpropagates through it
            policy = Categorical(logits=logits)
            action = policy.sample()
            obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
            global_step += args.n_envs
            log_probs.append(policy.log_prob(action))
            values.append(value)
            entropies.append(policy.entropy())
            rewards.append(np.sign(reward))
            dones.append(terminated | truncated)
            bootstrap_values.append(truncation_bootstrap(model, terminated, truncated, info.get("final_obs"), device))
            next_obs = torch.as_tensor(obs, device=device)

            for i in np.flatnonzero(info.get("_episode", [])):
                episodes += 1
                recent_returns.append(float(info["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", info["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", info["episode"]["l"][i], global_step)
            if (solved_at_step is None and args.target_return is not None and len(recent_returns) == 100
                    and np.mean(recent_returns) >= args.target_return):
                solved_at_step, solved_at_s = global_step, time.time() - start_time

        if args.stop_at_target and solved_at_step is not None:
            break  # keep the model that reached the target, not one more update of it
        with torch.no_grad():
            last_value = model(next_obs)[1]
        rewards, dones = (torch.as_tensor(np.stack(rows), device=device) for rows in (rewards, dones))
        returns = nstep_returns(rewards.float(), dones, torch.stack(bootstrap_values), last_value, args.gamma).flatten()
        log_probs, values, entropy = torch.cat(log_probs), torch.cat(values), torch.cat(entropies).mean()
        advantages = (returns - values).detach()
        policy_loss = -(advantages * log_probs).mean()
        value_loss = (returns - values).pow(2).mean()
        loss = policy_loss + args.vf_coef * value_loss - args.ent_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()

        sps = int((global_step - resumed_step) / (time.time() - resumed_time))
        if time.time() - last_print >= (0.5 if sys.stdout.isatty() else 10):
            print(f"\rstep {global_step}  SPS {sps}  return(100) {np.mean(recent_returns or [np.nan]):.1f}", end="" if sys.stdout.isatty() else "\n", flush=True)
            last_print = time.time()
        if global_step % (args.n_envs * args.n_steps * 100) == 0:
            for name, value in (("policy_loss", policy_loss), ("value_loss", value_loss), ("entropy", entropy)):
                writer.add_scalar(f"losses/{name}", value.item(), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
        if args.save_model and time.time() - last_checkpoint >= args.checkpoint_interval_s:
            save_atomically(checkpoint_state(), model_path)
            last_checkpoint = time.time()
    if sys.stdout.isatty():
        print()
    envs.close()
    train_time_s = time.time() - resumed_time

    eval_scores = [] if interrupted else evaluate(model, args, device, os.path.join(run_dir, "videos"))
    for i, score in enumerate(eval_scores):
        writer.add_scalar("eval/episodic_return", score, i)
    if args.save_model:
        save_atomically(checkpoint_state(), model_path)
    summary = dict(script="a2c_atari.py", env_id=args.env_id, seed=args.seed, global_step=global_step, episodes=episodes,
                   wall_time_s=round(time.time() - start_time, 3), sps=int((global_step - resumed_step) / train_time_s),
                   target_return=args.target_return, solved=solved_at_step is not None, solved_at_step=solved_at_step,
                   solved_at_s=None if solved_at_s is None else round(solved_at_s, 3),
                   train_return_mean100=float(np.mean(recent_returns)) if recent_returns else None,
                   eval_return_mean=float(np.mean(eval_scores)) if eval_scores else None,
                   eval_return_std=float(np.std(eval_scores)) if eval_scores else None,
                   eval_episodes=len(eval_scores), model_path=model_path if args.save_model else None, interrupted=bool(interrupted))
    with open(os.path.join(run_dir, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(os.path.join(run_dir, "summary.json.tmp"), os.path.join(run_dir, "summary.json"))
    writer.close()
    print(json.dumps(summary))
    if interrupted:
        sys.exit(128 + interrupted[0])  # 130 after Ctrl-C, 143 after `kill`


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing written yet
        sys.exit(130)
