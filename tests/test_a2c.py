"""a2c.py: the n-step return and Gaussian math, learning CartPole-v1 and InvertedPendulum-v5 with the
defaults, determinism, checkpoints with their normalization statistics, bad input, Ctrl-C.

This module also registers the environments the tests need; a subprocess reaches them as
`--env-id test_a2c:<Id>` with this folder on PYTHONPATH (gymnasium imports the module before `<Id>`)."""
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv

from conftest import REPO, assert_bad_input, assert_gaussian_matches_closed_form, assert_vector_nstep_returns_match_brute_force, ctrl_c_or_kill, interrupt_run, run_main_in_process, run_script

sys.path.insert(0, str(REPO))
import a2c  # noqa: E402  (importing a script has no side effects)

TESTS = os.path.dirname(os.path.abspath(__file__))
WITH_TEST_ENVS = {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}


def cartpole_with(**spaces):
    env = CartPoleEnv()
    for name, space in spaces.items():
        setattr(env, name, space)
    return env


class NarrowPendulum(PendulumEnv):
    """Pendulum with actions bounded to [-0.25, 0.75] (center 0.25, half-width 0.5), recording every action it is sent."""

    sent = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = gym.spaces.Box(-0.25, 0.75, (1,), np.float32)

    def step(self, action):
        NarrowPendulum.sent.append(np.array(action))
        return super().step(action)


gym.register("NoThreshold-v0", entry_point=CartPoleEnv, max_episode_steps=500)  # reward_threshold None
gym.register("NarrowPendulum-v0", entry_point=NarrowPendulum, max_episode_steps=200)
for env_id, spaces in {
    "MultiDiscreteActions-v0": dict(action_space=gym.spaces.MultiDiscrete([2, 2])),
    "DictObservations-v0": dict(observation_space=gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (4,))})),
    "ImageObservations-v0": dict(observation_space=gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)),
    "UnboundedActions-v0": dict(action_space=gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)),
}.items():
    gym.register(env_id, entry_point=lambda spaces=spaces: cartpole_with(**spaces), disable_env_checker=True)


def test_nstep_returns_match_brute_force_with_termination_and_truncation():
    assert_vector_nstep_returns_match_brute_force(a2c.nstep_returns)


def test_gaussian_matches_closed_form():
    assert_gaussian_matches_closed_form(a2c.gaussian)


def test_trains_on_the_unclipped_sample_and_sends_the_clipped_one(tmp_path, monkeypatch):
    """A short in-process run on a Box of [-0.25, 0.75]: every log-probability the loss takes is of a
    sampled action, some outside [-1, 1], and the environment only ever receives them clipped to [-1, 1] and
    mapped onto the box."""
    trained_on, sampled = [], []
    gaussian = a2c.gaussian

    def recording_gaussian(mean, log_std):
        policy = gaussian(mean, log_std)
        sample, log_prob = policy.sample, policy.log_prob
        policy.sample = lambda: sampled.append(sample()) or sampled[-1]
        policy.log_prob = lambda action: trained_on.append(action) or log_prob(action)
        return policy

    monkeypatch.setattr(a2c, "gaussian", recording_gaussian)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["a2c.py", "--env-id", "NarrowPendulum-v0", "--n-envs", "2", "--n-steps", "3",
                                      "--total-timesteps", "60", "--eval-episodes", "1", "--no-save-model", "--log-std-init", "0"])
    NarrowPendulum.sent.clear()
    a2c.main()
    trained_on, sampled = torch.cat(trained_on), torch.cat(sampled)
    torch.testing.assert_close(trained_on, sampled, rtol=0, atol=0)  # 10 updates of 2 x 3 samples
    assert (trained_on.abs() > 1).any() and len(trained_on) == 60
    # the environments are stepped in the order the samples were drawn; then come the greedy evaluation's steps
    np.testing.assert_array_equal(np.concatenate(NarrowPendulum.sent[:60]), (0.25 + 0.5 * sampled.clamp(-1, 1)).flatten().numpy())
    sent = np.concatenate(NarrowPendulum.sent)
    assert sent.min() >= -0.25 and sent.max() <= 0.75 and np.isin(np.float32([-0.25, 0.75]), sent).any()  # clipped ones hit an edge


@pytest.mark.parametrize("flags, normalized", [((), True), (("--norm-adv", "False"), False)])
def test_box_advantages_are_normalized_over_each_batch(tmp_path, monkeypatch, flags, normalized):
    """With the Box defaults the policy loss weighs log pi(a|s) by (A - mean A) / std A over the batch, and by A
    itself with --norm-adv False: read back from the gradient that reaches the log-probabilities, -A_i / batch size."""
    advantages, gaussian = [], a2c.gaussian

    def recording_gaussian(mean, log_std):
        policy = gaussian(mean, log_std)
        log_prob = policy.log_prob

        def hooked_log_prob(action):
            out = log_prob(action)
            out.register_hook(lambda grad: advantages.append(-grad * len(grad)))
            return out

        policy.log_prob = hooked_log_prob
        return policy

    monkeypatch.setattr(a2c, "gaussian", recording_gaussian)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["a2c.py", "--env-id", "NarrowPendulum-v0", "--n-envs", "2", "--n-steps", "3",
                                      "--total-timesteps", "60", "--eval-episodes", "1", "--no-save-model", *flags])
    a2c.main()
    assert len(advantages) == 10  # one batch of 2 x 3 per update
    for batch in advantages:
        is_normalized = abs(batch.mean().item()) < 1e-5 and abs(batch.std().item() - 1) < 1e-4
        assert is_normalized == normalized, batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("a2c_train")
    # a2c.py is deterministic: seed 2 reaches 475 at 90,752 steps, seed 1 at 143,424 (both greedy 500; docs/a2c.md)
    proc, summary = run_script("a2c.py", "--seed", 2, cwd=cwd)
    return cwd, proc, summary


def assert_learned(proc, summary, target):
    assert proc.returncode == 0, proc.stderr
    assert summary["solved"], summary
    assert summary["train_return_mean100"] >= summary["target_return"] == target
    assert summary["solved_at_step"] <= summary["global_step"]
    assert summary["eval_episodes"] == 10 and summary["eval_return_mean"] >= target, summary
    assert not summary["interrupted"]


def assert_checkpoint_replays(cwd, summary):
    proc = subprocess.run([sys.executable, str(REPO / "a2c.py"), "--env-id", summary["env_id"], "--eval-checkpoint", summary["model_path"]],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # same seed, same greedy policy, same evaluation episodes as at the end of training
    assert f"return {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f} over 10 episodes" in proc.stdout


def test_learns_cartpole(trained):
    assert_learned(*trained[1:], target=475)


def test_eval_checkpoint_round_trip(trained):
    assert_checkpoint_replays(trained[0], trained[2])


def test_learns_inverted_pendulum_and_its_checkpoint_keeps_the_normalization(tmp_path):
    proc, summary = run_script("a2c.py", "--env-id", "InvertedPendulum-v5", "--total-timesteps", 300_000, cwd=tmp_path)
    assert_learned(proc, summary, target=950)
    checkpoint = torch.load(tmp_path / summary["model_path"], weights_only=True)
    assert checkpoint["model"]["obs_rms.count"] > summary["global_step"] / 2
    assert checkpoint["model"]["obs_rms.var"].min() < 0.5, "statistics of the observations, not the initial ones"
    assert_checkpoint_replays(tmp_path, summary)


def test_capture_video(trained, tmp_path):
    cwd, _, summary = trained
    checkpoint = tmp_path / "a2c.pt"
    checkpoint.write_bytes((cwd / summary["model_path"]).read_bytes())
    proc, _ = run_script("a2c.py", "--eval-checkpoint", checkpoint, "--capture-video", "--eval-episodes", 1, cwd=tmp_path, timeout=120)
    try:
        import moviepy  # noqa: F401  (an optional dependency: RecordVideo writes through it)
    except ImportError:
        assert_bad_input(proc, "moviepy")
    else:
        assert proc.returncode == 0, proc.stderr
        assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_seed_same_numbers(tmp_path, env_id):
    args = ("--env-id", env_id, "--seed", 3, "--total-timesteps", 4_000, "--no-stop-at-target", "--eval-episodes", 2)
    summaries = [run_script("a2c.py", *args, cwd=tmp_path / str(run))[1] for run in range(2)]
    for key in ("wall_time_s", "sps", "model_path", "solved_at_s"):
        for summary in summaries:
            summary.pop(key)
    assert summaries[0] == summaries[1]
    assert summaries[0]["global_step"] >= 4_000 and summaries[0]["episodes"] > 0


def test_no_reward_threshold_trains_its_budget_and_exits_0(tmp_path):
    proc, summary = run_script("a2c.py", "--env-id", "test_a2c:NoThreshold-v0", "--total-timesteps", 10_000, "--eval-episodes", 1,
                               cwd=tmp_path, env=WITH_TEST_ENVS)
    assert proc.returncode == 0, proc.stderr
    assert summary["target_return"] is None and not summary["solved"] and summary["global_step"] >= 10_000
    assert summary["episodes"] > 100  # past the 100th episode, where a missing threshold once crashed the run
    trained_model = torch.load(tmp_path / summary["model_path"], weights_only=True)["model"]
    torch.manual_seed(1)  # the script's seed, so the same initial weights
    cartpole = gym.make("CartPole-v1")
    initial_model = a2c.ActorCritic(cartpole.observation_space, cartpole.action_space, a2c.Args.log_std_init).state_dict()
    assert not torch.equal(trained_model["actor.0.weight"], initial_model["actor.0.weight"])
    assert not torch.equal(trained_model["critic.4.weight"], initial_model["critic.4.weight"])


BAD_INPUT = [
    (("--env-id", "test_a2c:MultiDiscreteActions-v0"), ("MultiDiscrete",)),
    (("--env-id", "test_a2c:DictObservations-v0"), ("Dict", "flat Box")),
    (("--env-id", "test_a2c:ImageObservations-v0"), ("(64, 64, 3)", "flat Box")),
    (("--env-id", "test_a2c:UnboundedActions-v0"), ("finite bounds",)),
    (("--env-id", "NoSuchEnv-v0"), ("NoSuchEnv-v0",)),
    (("--n-envs", 0), ("--n-envs",)),
    (("--env-id", "Pendulum-v1", "--n-steps", -1), ("--n-steps",)),
    (("--total-timesteps", 0), ("--total-timesteps",)),
    (("--gamma", 1.5), ("--gamma",)),
    (("--eval-checkpoint", "missing.pt"), ("missing.pt", "No such file")),
]


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_bad_input_exits_2(tmp_path, monkeypatch, capsys, args, words):
    proc = run_main_in_process(a2c, monkeypatch, capsys, tmp_path, *args)
    assert_bad_input(proc, *words)
    assert not (tmp_path / "runs").exists()


def test_bad_input_exits_2_as_a_process(tmp_path):
    proc, _ = run_script("a2c.py", *BAD_INPUT[0][0], cwd=tmp_path, timeout=60, env=WITH_TEST_ENVS)
    assert_bad_input(proc, *BAD_INPUT[0][1])
    assert not (tmp_path / "runs").exists()


def test_foreign_checkpoints_exit_2(tmp_path):
    torch.save({"script": "a3c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, tmp_path / "other.pt")
    torch.save({"script": "a2c.py", "model": {}, "args": {"env_id": "Acrobot-v1"}}, tmp_path / "acrobot.pt")
    assert_bad_input(run_script("a2c.py", "--eval-checkpoint", "other.pt", cwd=tmp_path, timeout=60)[0], "not an a2c.py checkpoint")
    assert_bad_input(run_script("a2c.py", "--eval-checkpoint", "acrobot.pt", cwd=tmp_path, timeout=60)[0], "Acrobot-v1")


@ctrl_c_or_kill
def test_ctrl_c_or_kill_saves_and_exits_128_plus_signal(tmp_path, signum, to_group, exit_code):
    proc, stderr, summary = interrupt_run("a2c.py", "--no-stop-at-target", cwd=tmp_path, signum=signum, to_group=to_group)
    assert proc.returncode == exit_code and summary is not None and "Traceback" not in stderr, stderr
    assert summary["interrupted"] and summary["global_step"] > 0
    assert (tmp_path / summary["model_path"]).is_file()
