"""The environment suite installs from requirements.txt, benchmarks/suite.py does not rot, the scripts keep their shape."""
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from conftest import REPO


def load_suite():
    spec = importlib.util.spec_from_file_location("suite", REPO / "benchmarks/suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    return suite


@pytest.mark.parametrize("env_id", [*load_suite().SUITE, "PongNoFrameskip-v4"])
def test_suite_environment_constructs_and_steps(env_id):
    if env_id.startswith("Pong"):
        import ale_py

        gym.register_envs(ale_py)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) or env_id.startswith("Pong")
        assert np.isfinite(reward)
        if terminated or truncated:
            env.reset()
    env.close()


def test_video_is_written_offline(tmp_path):
    """What --capture-video relies on: RecordVideo writes an mp4 through moviepy, and MuJoCo renders
    without a display through EGL."""
    script = (
        "import os, gymnasium as gym\n"
        "os.environ.setdefault('MUJOCO_GL', 'egl')\n"
        "for env_id in ('CartPole-v1', 'InvertedPendulum-v5'):\n"
        "    env = gym.wrappers.RecordVideo(gym.make(env_id, render_mode='rgb_array'), f'videos/{env_id}', episode_trigger=lambda e: True)\n"
        "    env.reset(seed=0)\n"
        "    for _ in range(30):\n"
        "        env.step(env.action_space.sample())\n"
        "    env.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for env_id in ("CartPole-v1", "InvertedPendulum-v5"):
        videos = list((tmp_path / "videos" / env_id).glob("*.mp4"))
        assert videos and videos[0].stat().st_size > 1000, (env_id, videos)


def test_suite_races_a_script_against_the_peer(tmp_path):
    """One script, one seed, one environment, a few thousand steps, the peer included; a system
    that refuses the environment (exit 2) is skipped and reported. Needs requirements-bench.txt."""
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("matplotlib")
    refuser = tmp_path / "refuses.py"
    refuser.write_text("import sys\nprint('error: refuses.py supports no environment', file=sys.stderr)\nsys.exit(2)\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/suite.py"), "--systems", "a2c.py", str(refuser),
                           "--envs", "CartPole-v1", "--seeds", "1", "--total-timesteps", "3000", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "suite.json").read_text())
    runs = {run["command"]: run for run in saved["runs"]}
    assert set(runs) == {"a2c.py", str(refuser), "benchmarks/sb3_a2c.py"}
    assert runs[str(refuser)]["status"] == "refused: error: refuses.py supports no environment"
    for command in ("a2c.py", "benchmarks/sb3_a2c.py"):
        run = runs[command]
        assert run["status"] == "ok" and run["env_id"] == "CartPole-v1" and run["seed"] == 1, run
        assert 3000 <= run["global_step"] < 3000 + 1000, run["global_step"]
        assert run["target_return"] == 475.0 and run["solved"] is False, run
        assert run["startup_s"] > 0 and run["elapsed_s"] > run["startup_s"]
        assert run["episodes"] > 0 and len(run["training_episodes"]) == run["episodes"], command
        seconds = [episode[1] for episode in run["training_episodes"]]
        assert 0 < min(seconds) <= max(seconds) <= run["elapsed_s"], (command, min(seconds), max(seconds))
    table = (out / "suite.md").read_text()
    assert "| CartPole-v1 | `a2c.py` | 0/1 | not reached |" in table, table
    assert "| CartPole-v1 | SB3 A2C (rl-zoo) | 0/1 | not reached |" in table, table
    assert "refused: error: refuses.py supports no environment" in table, table
    assert (out / "CartPole-v1.png").stat().st_size > 0
    redrawn = subprocess.run([sys.executable, str(REPO / "benchmarks/suite.py"), "--plot-only", "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert redrawn.returncode == 0 and "| CartPole-v1 | `a2c.py` | 0/1 |" in redrawn.stdout, redrawn.stderr


def test_peer_settings_follow_the_zoo():
    """The peer's settings for each suite environment (rl-baselines3-zoo's a2c.yml), and the linear schedule."""
    spec = importlib.util.spec_from_file_location("sb3_a2c", REPO / "benchmarks/sb3_a2c.py")
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    assert peer.zoo_settings("CartPole-v1") == (8, False, {"ent_coef": 0.0})
    assert peer.zoo_settings("Acrobot-v1") == (16, True, {"ent_coef": 0.0})
    n_envs, normalize, settings = peer.zoo_settings("HalfCheetah-v5")
    assert (n_envs, normalize, settings["n_steps"], settings["gae_lambda"], settings["use_sde"]) == (4, True, 8, 0.9, True)
    assert settings["learning_rate"](1.0) == pytest.approx(9.6e-4) and settings["learning_rate"](0.5) == pytest.approx(4.8e-4)
    n_envs, normalize, settings = peer.zoo_settings("Pendulum-v1")
    assert (n_envs, normalize, settings["gamma"]) == (8, True, 0.9)
    assert peer.zoo_settings("LunarLander-v3") == (1, False, {})  # not in our table: SB3's defaults


BUDGETS = {"a2c.py": 300, "a3c.py": 340, "gae.py": 355, "da2c_nstep.py": 340, "a2c_atari.py": 340}  # CONVENTIONS.md v2


@pytest.mark.parametrize("script", BUDGETS)
def test_script_within_its_line_budget_and_the_readme_says_how_long(script):
    source = (REPO / script).read_text()
    lines = sum(1 for line in source.splitlines() if line.strip())  # non-blank, docstrings included
    assert lines <= BUDGETS[script]
    assert len(ast.get_docstring(ast.parse(source), clean=False).splitlines()) <= 25  # the module docstring
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| [`{script}`]"))
    assert row.split("|")[4].strip() == str(lines), row


# What the lines behind each link of the README's "Details that matter" must still say: (detail, script) -> pattern
DETAIL_LINES = {(1, "a2c.py"): r'final_obs', (1, "a3c.py"): r'bootstrap = 0\.0 if terminated', (1, "da2c_nstep.py"): r'def nstep_returns',
                (2, "a3c.py"): r'zero_grad', (3, "a3c.py"): r'"step": torch\.zeros', (4, "a2c.py"): r'clamp\(-1, 1\)',
                (4, "a3c.py"): r'np\.clip', (5, "a2c.py"): r'register_buffer', (5, "a3c.py"): r'register_buffer',
                (5, "da2c_nstep.py"): r'obs_sums|\(obs - mean\)', (6, "a3c.py"): r'LSTM state', (7, "da2c_nstep.py"): r'all_reduce',
                (8, "da2c_nstep.py"): r'destroy_process_group'}


def test_the_readme_details_point_at_the_lines_that_do_them():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Details that matter")[1].split("\n## ")[0]
    details = re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", section, re.S | re.M)  # (number, text) of each numbered item
    links = [(int(detail), script, int(first), int(last or first)) for detail, text in details
             for script, first, last in re.findall(r"\]\(([\w.]+)#L(\d+)(?:-L(\d+))?\)", text)]  # [..](script#La-Lb)
    assert {(detail, script) for detail, script, _, _ in links} == set(DETAIL_LINES)
    for detail, script, first, last in links:
        lines = (REPO / script).read_text().splitlines()[first - 1:last]
        assert last - first < 25 and re.search(DETAIL_LINES[detail, script], "\n".join(lines)), (detail, script, first, last)
