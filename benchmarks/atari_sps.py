"""Training throughput on Atari Pong: a2c_atari.py side by side with Stable-Baselines3 A2C, and the
environment-only ceiling.

    pip install -r requirements-bench.txt
    python benchmarks/atari_sps.py                 # 2 rounds of: env only, a2c_atari.py, SB3 A2C
    python benchmarks/atari_sps.py --rounds 1 --ours-steps 30000 --peer-steps 10000
    python benchmarks/atari_sps.py --ours-script /tmp/a2c_atari_variant.py   # a modified copy, same race

- env only: `AtariVectorEnv` with a2c_atari.py's settings and uniformly random actions, no network:
  the most agent steps per second training could reach on this machine.
- a2c_atari.py: a training run of `--ours-steps` (no stop at target); its summary's `sps` counts
  training only, from the first step to the last (not startup or evaluation).
- SB3 A2C with rl-zoo's Atari hyperparameters (hyperparams/a2c.yml, atari): 16 envs with AtariWrapper,
  4-frame stack, CnnPolicy, RMSpropTFLike eps 1e-5, ent_coef 0.01, vf_coef 0.25; SPS is steps over
  the time spent in learn().
Rounds alternate the three so that machine noise falls on all alike; the table gives medians.
Writes benchmarks/results/atari_sps.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def env_only_sps(n_envs, seconds):
    import numpy as np
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv("pong", n_envs, autoreset_mode="SameStep", reward_clipping=False)
    envs.reset(seed=1)
    rng = np.random.default_rng(1)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(rng.integers(0, envs.single_action_space.n, n_envs))
        steps += n_envs
    sps = steps / (time.perf_counter() - start)
    envs.close()
    return sps


def ours_sps(script, steps, extra):
    with tempfile.TemporaryDirectory() as cwd:
        command = [sys.executable, str(script), "--total-timesteps", str(steps), "--no-stop-at-target",
                   "--eval-episodes", "1", "--no-save-model", *extra]
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"a2c_atari.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return json.loads(next(Path(cwd).glob("runs/*/summary.json")).read_text())["sps"]


def peer_sps(steps):
    """SB3 A2C, rl-zoo Atari settings, in a fresh interpreter so that it imports what it needs alone."""
    code = f"""
import time, gymnasium as gym, ale_py
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.vec_env import VecFrameStack
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
gym.register_envs(ale_py)
envs = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=16, seed=1), n_stack=4)
model = A2C("CnnPolicy", envs, ent_coef=0.01, vf_coef=0.25, seed=1, device="cpu",
            policy_kwargs=dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5)))
start = time.perf_counter()
model.learn({steps})
print(model.num_timesteps / (time.perf_counter() - start))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"SB3 A2C failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ours-steps", type=int, default=60_000)
    parser.add_argument("--peer-steps", type=int, default=24_000)
    parser.add_argument("--env-seconds", type=float, default=20.0)
    parser.add_argument("--ours-args", default="", help="extra arguments for a2c_atari.py, one string")
    parser.add_argument("--ours-script", default=str(REPO / "a2c_atari.py"), help="the script to race (a variant of a2c_atari.py)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/atari_sps.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from a2c_atari import Args

    n_envs = Args.n_envs
    results = {"env only": [], "a2c_atari.py": [], "SB3 A2C (rl-zoo)": []}
    for round_index in range(args.rounds):
        results["env only"].append(env_only_sps(n_envs, args.env_seconds))
        results["a2c_atari.py"].append(ours_sps(Path(args.ours_script).resolve(), args.ours_steps, args.ours_args.split()))
        results["SB3 A2C (rl-zoo)"].append(peer_sps(args.peer_steps))
        print(f"round {round_index + 1}: " + ", ".join(f"{name} {values[-1]:.0f}" for name, values in results.items()), flush=True)

    medians = {name: statistics.median(values) for name, values in results.items()}
    ours, peer, ceiling = medians["a2c_atari.py"], medians["SB3 A2C (rl-zoo)"], medians["env only"]
    rows = ["| what | steps per second (median) | runs |", "|---|---|---|"]
    rows += [f"| {name} | {medians[name]:.0f} | {', '.join(f'{v:.0f}' for v in values)} |" for name, values in results.items()]
    markdown = "\n".join(rows) + f"\n\na2c_atari.py: {ours / peer:.2f}x SB3 A2C, {ours / ceiling:.0%} of the env-only ceiling ({n_envs} games)."
    machine = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU used, {time.strftime('%Y-%m-%d')}"
    print(f"\n{markdown}\n\n{machine}; `python benchmarks/atari_sps.py {' '.join(sys.argv[1:])}`")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "argv": sys.argv[1:], "table": markdown, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
