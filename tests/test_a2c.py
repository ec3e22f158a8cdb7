"""a2c.py: the n-step return math, learning CartPole, determinism, checkpoints, bad input, Ctrl-C."""
import subprocess
import sys

import pytest
import torch

from conftest import REPO, assert_adam_matches_torch_optim_adam, assert_bad_input, assert_vector_nstep_returns_match_brute_force, interrupt_run, run_script

sys.path.insert(0, str(REPO))
import a2c  # noqa: E402  (importing a script has no side effects)


def test_nstep_returns_match_brute_force_with_termination_and_truncation():
    assert_vector_nstep_returns_match_brute_force(a2c.nstep_returns)


def test_adam_matches_torch_optim_adam():
    assert_adam_matches_torch_optim_adam(a2c.Adam, lambda: a2c.ActorCritic(4, 2, 16))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("a2c_train")
    proc, summary = run_script("a2c.py", "--seed", 1, cwd=cwd)
    return cwd, proc, summary


def test_learns_cartpole(trained):
    _, proc, summary = trained
    assert proc.returncode == 0, proc.stderr
    assert summary["solved"], summary
    assert summary["train_return_mean100"] >= summary["target_return"] == 475
    assert summary["solved_at_step"] <= summary["global_step"]
    assert summary["eval_episodes"] == 10 and summary["eval_return_mean"] >= 475, summary
    assert not summary["interrupted"]


def test_eval_checkpoint_round_trip(trained):
    cwd, _, summary = trained
    proc = subprocess.run([sys.executable, str(REPO / "a2c.py"), "--eval-checkpoint", summary["model_path"]],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # same seed, same greedy policy, same evaluation episodes as at the end of training
    assert f"return {summary['eval_return_mean']:.1f} ± {summary['eval_return_std']:.1f} over 10 episodes" in proc.stdout


def test_capture_video(trained, tmp_path):
    cwd, _, summary = trained
    checkpoint = tmp_path / "a2c.pt"
    checkpoint.write_bytes((cwd / summary["model_path"]).read_bytes())
    proc, _ = run_script("a2c.py", "--eval-checkpoint", checkpoint, "--capture-video", "--eval-episodes", 2, cwd=tmp_path, timeout=120)
    try:
        import moviepy  # noqa: F401  (an optional dependency: RecordVideo writes through it)
    except ImportError:
        assert_bad_input(proc, "moviepy")
    else:
        assert proc.returncode == 0, proc.stderr
        assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2


def test_same_seed_same_numbers(tmp_path):
    args = ("--seed", 3, "--total-timesteps", 30_000, "--no-stop-at-target", "--eval-episodes", 2)
    summaries = [run_script("a2c.py", *args, cwd=tmp_path / str(run))[1] for run in range(2)]
    for key in ("wall_time_s", "sps", "model_path", "solved_at_s"):
        for summary in summaries:
            summary.pop(key)
    assert summaries[0] == summaries[1]
    assert summaries[0]["global_step"] >= 30_000 and summaries[0]["episodes"] > 0


def test_async_envs_run(tmp_path):
    proc, summary = run_script("a2c.py", "--async-envs", "--n-envs", 4, "--total-timesteps", 4_000, "--eval-episodes", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary["global_step"] >= 4_000 and not summary["solved"]


@pytest.mark.parametrize("args, words", [
    (("--env-id", "Pendulum-v1"), ("Box action space", "Discrete")),
    (("--env-id", "NoSuchEnv-v0"), ("NoSuchEnv-v0",)),
    (("--n-envs", 0), ("--n-envs",)),
    (("--n-steps", -1), ("--n-steps",)),
    (("--gamma", 1.5), ("--gamma",)),
    (("--eval-checkpoint", "missing.pt"), ("missing.pt", "does not exist")),
])
def test_bad_input_exits_2(tmp_path, args, words):
    proc, _ = run_script("a2c.py", *args, cwd=tmp_path, timeout=60)
    assert_bad_input(proc, *words)
    assert not (tmp_path / "runs").exists()


def test_foreign_checkpoints_exit_2(tmp_path):
    torch.save({"script": "a3c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, tmp_path / "other.pt")
    torch.save({"script": "a2c.py", "model": {}, "args": {"env_id": "Acrobot-v1"}}, tmp_path / "acrobot.pt")
    assert_bad_input(run_script("a2c.py", "--eval-checkpoint", "other.pt", cwd=tmp_path, timeout=60)[0], "not an a2c.py checkpoint")
    assert_bad_input(run_script("a2c.py", "--eval-checkpoint", "acrobot.pt", cwd=tmp_path, timeout=60)[0], "Acrobot-v1")


@pytest.mark.parametrize("env_args", [(), ("--async-envs", "--n-envs", 4)])
def test_ctrl_c_saves_and_exits_130(tmp_path, env_args):
    proc, stderr, summary = interrupt_run("a2c.py", "--no-stop-at-target", *env_args, cwd=tmp_path)
    assert proc.returncode == 130 and summary is not None and "Traceback" not in stderr, stderr
    assert summary["interrupted"] and summary["global_step"] > 0
    assert (tmp_path / summary["model_path"]).is_file()
