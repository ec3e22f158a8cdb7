"""The peer: Stable-Baselines3 A2C with rl-baselines3-zoo's settings, writing our summary.json.

Settings: rl-baselines3-zoo 2.9.2, `rl_zoo3/hyperparams/a2c.yml`, copied below with their entry names.
CartPole-v1, Acrobot-v1 and Pendulum-v1 have entries of their own. The MuJoCo tasks get the zoo's
tuned entry for the PyBullet locomotion family (`HalfCheetahBulletEnv-v0` and its siblings); the file's
`HalfCheetah-v4` entry is its untuned `mujoco-defaults` (normalize, one env, SB3's defaults). Any other id gets the zoo's `Default` (SB3's A2C defaults). As the zoo does, `normalize`
wraps the vector env in VecNormalize (observations and rewards, with the algorithm's gamma), `lin_X`
is a learning rate falling linearly from X to 0 over the budget, and episodes are counted on the raw
rewards. It stops, as our scripts do, once the mean of the last 100 training episodes reaches the
target (the env's reward threshold, or --target-return).

    python benchmarks/sb3_a2c.py --env-id Acrobot-v1 --seed 1
"""
import argparse
import json
import os
import time

start_time = time.time()  # the peer's clock starts before its imports, ours after them

ZOO_PYBULLET = dict(normalize=True, n_envs=4, ent_coef=0.0, max_grad_norm=0.5, n_steps=8, gae_lambda=0.9,
                    vf_coef=0.4, gamma=0.99, use_rms_prop=True, normalize_advantage=False,
                    learning_rate="lin_0.00096", use_sde=True, policy_kwargs=dict(log_std_init=-2, ortho_init=False))
ZOO_A2C = {
    "CartPole-v1": dict(n_envs=8, ent_coef=0.0),
    "Acrobot-v1": dict(normalize=True, n_envs=16, ent_coef=0.0),
    "Pendulum-v1": dict(normalize=True, n_envs=8, ent_coef=0.0, max_grad_norm=0.5, n_steps=8, gae_lambda=0.9,
                        vf_coef=0.4, gamma=0.9, use_rms_prop=True, normalize_advantage=False,
                        learning_rate="lin_7e-4", use_sde=True, policy_kwargs=dict(log_std_init=-2, ortho_init=False)),
    "InvertedPendulum-v5": ZOO_PYBULLET,
    "HalfCheetah-v5": ZOO_PYBULLET,
}


def zoo_settings(env_id):
    """(n_envs, normalize, A2C keyword arguments) for env_id, as rl-baselines3-zoo would build them."""
    settings = dict(ZOO_A2C.get(env_id, {}))
    normalize, n_envs = settings.pop("normalize", False), settings.pop("n_envs", 1)
    if isinstance(settings.get("learning_rate"), str):  # "lin_X": X * (fraction of the budget remaining)
        initial = float(settings["learning_rate"][len("lin_"):])
        settings["learning_rate"] = lambda progress_remaining: progress_remaining * initial
    return n_envs, normalize, settings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--target-return", type=float, default=None,
                        help="mean of the last 100 training episodes that counts as solved (default: the env's threshold)")
    args = parser.parse_args()

    import numpy as np
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class StopAtTarget(BaseCallback):
        def __init__(self, target_return):
            super().__init__()
            self.target_return, self.solved_at_step, self.solved_at_s = target_return, None, None
            self.episodes = []  # (step, unix time, return) of every training episode, for the curves

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append((self.num_timesteps, time.time(), float(info["episode"]["r"])))
            returns = [info["r"] for info in self.model.ep_info_buffer]  # the last 100 episodes
            if self.target_return is not None and len(returns) == 100 and np.mean(returns) >= self.target_return:
                self.solved_at_step, self.solved_at_s = self.num_timesteps, time.time() - start_time
                return False
            return True

    n_envs, normalize, settings = zoo_settings(args.env_id)
    envs = make_vec_env(args.env_id, n_envs=n_envs, seed=args.seed)
    target_return = args.target_return if args.target_return is not None else envs.envs[0].spec.reward_threshold
    if normalize:
        envs = VecNormalize(envs, gamma=settings.get("gamma", 0.99))
    stop = StopAtTarget(target_return)
    model = A2C("MlpPolicy", envs, seed=args.seed, device="cpu", verbose=0, **settings)
    model.learn(args.total_timesteps, callback=stop)
    wall_time_s = time.time() - start_time
    returns = [info["r"] for info in model.ep_info_buffer]
    run_dir = f"runs/{args.env_id}__sb3_a2c__{args.seed}__{int(start_time)}"
    os.makedirs(run_dir, exist_ok=True)
    summary = {
        "script": "sb3_a2c", "env_id": args.env_id, "seed": args.seed, "global_step": model.num_timesteps,
        "episodes": len(stop.episodes), "wall_time_s": round(wall_time_s, 3),
        "sps": int(model.num_timesteps / wall_time_s), "target_return": target_return,
        "solved": stop.solved_at_step is not None, "solved_at_step": stop.solved_at_step,
        "solved_at_s": stop.solved_at_s, "train_return_mean100": float(np.mean(returns)) if returns else None,
        "eval_return_mean": None, "interrupted": False,
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(run_dir, "episodes.json"), "w") as f:
        json.dump(stop.episodes, f)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
