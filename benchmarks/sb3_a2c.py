"""The peer: Stable-Baselines3 A2C with rl-zoo's CartPole-v1 hyperparameters, writing our summary.json.

rl-zoo (hyperparams/a2c.yml, CartPole-v1): n_envs 8, n_timesteps 5e5, MlpPolicy, ent_coef 0.0; every
other value is SB3's A2C default (RMSprop lr 7e-4, n_steps 5, gamma 0.99). It stops, as our scripts
do, once the mean of the last 100 training episodes reaches the env's reward threshold.

    python benchmarks/sb3_a2c.py --seed 1
"""
import argparse
import json
import os
import time


def main():
    start_time = time.time()
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    args = parser.parse_args()

    import numpy as np
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtTarget(BaseCallback):
        def __init__(self, target_return):
            super().__init__()
            self.target_return, self.solved_at_step, self.solved_at_s = target_return, None, None
            self.episodes = []  # (step, seconds since start, return) for the benchmark's curves

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((self.num_timesteps, time.time() - start_time, float(info["episode"]["r"])))
            returns = [info["r"] for info in self.model.ep_info_buffer]  # the last 100 episodes
            if len(returns) == 100 and np.mean(returns) >= self.target_return:
                self.solved_at_step, self.solved_at_s = self.num_timesteps, time.time() - start_time
                return False
            return True

    envs = make_vec_env(args.env_id, n_envs=8, seed=args.seed)
    stop = StopAtTarget(envs.envs[0].spec.reward_threshold)
    model = A2C("MlpPolicy", envs, ent_coef=0.0, seed=args.seed, device="cpu", verbose=0)
    model.learn(args.total_timesteps, callback=stop)
    wall_time_s = time.time() - start_time
    returns = [info["r"] for info in model.ep_info_buffer]
    run_dir = f"runs/{args.env_id}__sb3_a2c__{args.seed}__{int(start_time)}"
    os.makedirs(run_dir, exist_ok=True)
    summary = {
        "script": "sb3_a2c", "env_id": args.env_id, "seed": args.seed, "global_step": model.num_timesteps,
        "wall_time_s": round(wall_time_s, 3), "sps": int(model.num_timesteps / wall_time_s),
        "target_return": stop.target_return, "solved": stop.solved_at_step is not None,
        "solved_at_step": stop.solved_at_step, "solved_at_s": stop.solved_at_s,
        "train_return_mean100": float(np.mean(returns)) if returns else None,
        "eval_return_mean": None, "interrupted": False,
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(run_dir, "episodes.json"), "w") as f:
        json.dump(stop.episodes, f)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
