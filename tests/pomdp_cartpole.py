"""CartPole-v1 without its two velocities: a partially observed task for the scripts' `--lstm`.

The observation keeps the cart's position and the pole's angle; the cart's velocity and the pole's angular
velocity must be inferred from the history, which a feed-forward policy cannot see. From the repo root
(the scripts put their own folder on sys.path, so any working directory does):

    python a3c.py --lstm --env-id tests.pomdp_cartpole:CartPoleNoVelocity-v0
"""
import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

KEPT = [0, 2]  # x and theta of (x, x_dot, theta, theta_dot)


class CartPoleNoVelocity(CartPoleEnv):
    def __init__(self, render_mode=None):
        super().__init__(render_mode=render_mode)
        high = self.observation_space.high[KEPT]
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[KEPT], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[KEPT], reward, terminated, truncated, info


# CartPole-v1's time limit and threshold
gym.register("CartPoleNoVelocity-v0", entry_point=CartPoleNoVelocity, max_episode_steps=500, reward_threshold=475.0)
