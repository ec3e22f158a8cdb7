"""a2c_atari.py: the return math, the truncation bootstrap on real ALE games, the network on uint8
frames, a short run on real Pong that must train the weights, --eval-checkpoint, --resume (restores
everything, continues), Ctrl-C, and bad input."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, assert_bad_input, assert_vector_nstep_returns_match_brute_force, ctrl_c_or_kill, interrupt_run, run_main_in_process, run_script

sys.path.insert(0, str(REPO))
import a2c_atari  # noqa: E402  (importing a script has no side effects)

# 4 games cut after 200 frames (50 agent steps): every game ends by truncation, 20 updates of 4 x 5
N_ENVS, FRAMES, STEPS = 4, 200, 400
SHORT = ("--n-envs", N_ENVS, "--max-episode-frames", FRAMES, "--eval-episodes", 1)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # batches of 4 frames need one thread; a second spins on a busy machine


def test_nstep_returns_match_brute_force_with_termination_and_truncation():
    assert_vector_nstep_returns_match_brute_force(a2c_atari.nstep_returns)


@pytest.mark.parametrize("env_id", ["PongNoFrameskip-v4", "ALE/Pong-v5", "Pong", "pong"])
def test_env_ids_name_the_pong_rom(env_id):
    assert a2c_atari.rom_name(env_id) == "pong"


def test_camel_case_games_map_to_snake_case_roms():
    assert a2c_atari.rom_name("MsPacmanNoFrameskip-v4") == "ms_pacman"
    assert a2c_atari.rom_name("ALE/SpaceInvaders-v5") == "space_invaders"


def test_network_takes_uint8_frames_and_scales_them_itself():
    torch.manual_seed(0)
    model = a2c_atari.ActorCritic(n_actions=6)
    frames = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    logits, value = model(frames)
    assert logits.shape == (3, 6) and value.shape == (3,)
    assert logits.dtype == value.dtype == torch.float32
    hidden = model.body(frames.float() / 255.0)
    torch.testing.assert_close(logits, model.policy_head(hidden))
    torch.testing.assert_close(value, model.value_head(hidden).squeeze(-1))


def test_game_cut_by_the_frame_limit_bootstraps_from_the_value_of_its_last_frame():
    """Real Pong games cut after 40 frames: the bootstrap is V(final_obs) for them, 0 for a game that
    terminated (on the same step or not) and for games still running."""
    torch.manual_seed(0)
    model = a2c_atari.ActorCritic(n_actions=6)
    envs = a2c_atari.make_env(a2c_atari.Args(max_episode_frames=40), 3)
    envs.reset(seed=1)
    for _ in range(20):
        obs, _, terminated, truncated, info = envs.step(np.zeros(3, dtype=np.int64))
        if truncated.any():
            break
    envs.close()
    assert truncated.all() and not terminated.any()
    assert not np.array_equal(info["final_obs"], obs)  # the reset game's first frames are not its last ones
    with torch.no_grad():
        want = model(torch.as_tensor(info["final_obs"]))[1]
    torch.testing.assert_close(a2c_atari.truncation_bootstrap(model, terminated, truncated, info["final_obs"], "cpu"), want)
    terminated = np.array([True, False, False])
    truncated = np.array([True, True, False])
    bootstrap = a2c_atari.truncation_bootstrap(model, terminated, truncated, info["final_obs"], "cpu")
    torch.testing.assert_close(bootstrap, torch.stack([torch.tensor(0.0), want[1], torch.tensor(0.0)]))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """The first run, and its checkpoint's bytes: a resume test puts them back before it resumes."""
    cwd = tmp_path_factory.mktemp("atari_short")
    proc, summary = run_script("a2c_atari.py", "--total-timesteps", STEPS, "--checkpoint-interval-s", 0.5, *SHORT, cwd=cwd, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    return cwd, summary, Path(summary["model_path"]).read_bytes()


def load(path):
    return torch.load(path, weights_only=True)


def test_short_run_on_pong_trains_every_weight_and_writes_its_run(short_run):
    cwd, summary, _ = short_run
    assert summary["script"] == "a2c_atari.py" and summary["env_id"] == "PongNoFrameskip-v4"
    assert summary["global_step"] == STEPS and summary["target_return"] == 18.0 and summary["interrupted"] is False
    assert summary["episodes"] == N_ENVS * (STEPS // N_ENVS // (FRAMES // 4))  # every game ran to the frame limit
    assert summary["eval_episodes"] == 1
    run_dir = Path(summary["model_path"]).parent
    assert run_dir.is_absolute() and run_dir.parent == cwd / "runs" and list(run_dir.glob("events.out.tfevents.*"))
    checkpoint = load(summary["model_path"])
    assert checkpoint["script"] == "a2c_atari.py" and checkpoint["global_step"] == STEPS
    torch.manual_seed(1)  # the script's seed, then the network: its initial weights
    initial = a2c_atari.ActorCritic(6).state_dict()
    n_updates = STEPS // (N_ENVS * a2c_atari.Args.n_steps)
    state = checkpoint["optimizer"]["state"]
    assert len(state) == len(initial)
    for name, weights in checkpoint["model"].items():
        assert not torch.equal(weights, initial[name]), name
    for param_state in state.values():
        assert param_state["step"] == n_updates and param_state["exp_avg"].abs().sum() > 0


def test_eval_checkpoint_plays_greedy_games(short_run):
    cwd, summary, _ = short_run
    proc, _ = run_script("a2c_atari.py", "--eval-checkpoint", summary["model_path"], "--eval-episodes", 2,
                         "--max-episode-frames", FRAMES, cwd=cwd, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert "over 2 episodes" in proc.stdout


def test_resume_restores_model_optimizer_rng_budget_record_and_run_directory(short_run, tmp_path):
    """Resumed from another directory with no arguments, a run whose budget is spent trains no more:
    what it saves again must be what it restored, in the first run's directory."""
    _, first_summary, first_bytes = short_run
    model_path = Path(first_summary["model_path"])
    first = load(model_path)
    first.update(solved_at_step=400, solved_at_s=1.5)  # a run that had solved: the record must survive
    torch.save(first, model_path)
    torch.manual_seed(1)
    assert not torch.equal(first["rng_state"], torch.get_rng_state())  # the sampling stream has moved on
    proc, _ = run_script("a2c_atari.py", "--resume", model_path, cwd=tmp_path, env=ONE_THREAD)
    saved = load(model_path)
    model_path.write_bytes(first_bytes)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert resumed["model_path"] == str(model_path) and not (tmp_path / "runs").exists()
    assert resumed["global_step"] == STEPS and resumed["solved"] is True and resumed["solved_at_step"] == 400
    assert resumed["wall_time_s"] > first_summary["wall_time_s"]  # the clock goes on from the first part
    assert saved["args"]["total_timesteps"] == STEPS and saved["run_dir"] == first["run_dir"]
    assert (saved["solved_at_step"], saved["solved_at_s"]) == (400, 1.5)
    assert torch.equal(saved["rng_state"], first["rng_state"])
    for name, weights in first["model"].items():
        assert torch.equal(saved["model"][name], weights), name
    assert saved["optimizer"]["param_groups"] == first["optimizer"]["param_groups"]
    for index, param_state in first["optimizer"]["state"].items():
        for key, value in param_state.items():
            assert torch.equal(saved["optimizer"]["state"][index][key], value), (index, key)


def test_resumed_run_continues_training(short_run, tmp_path):
    _, first_summary, first_bytes = short_run
    model_path = Path(first_summary["model_path"])
    model_path.write_bytes(first_bytes)
    first, events = load(model_path), set(model_path.parent.glob("events.out.tfevents.*"))
    proc, _ = run_script("a2c_atari.py", "--resume", model_path, "--total-timesteps", STEPS + 100, cwd=tmp_path, env=ONE_THREAD)
    resumed = load(model_path)
    model_path.write_bytes(first_bytes)
    assert proc.returncode == 0, proc.stderr
    assert resumed["global_step"] == STEPS + 100 and resumed["args"]["total_timesteps"] == STEPS + 100
    assert resumed["run_dir"] == first["run_dir"] and resumed["args"]["n_envs"] == N_ENVS  # its own arguments
    assert len(set(model_path.parent.glob("events.out.tfevents.*")) - events) == 1  # its own, in the same directory
    for (name, weights), first_weights in zip(resumed["model"].items(), first["model"].values()):
        assert not torch.equal(weights, first_weights), name
    n_updates = 100 // (N_ENVS * a2c_atari.Args.n_steps)
    for param_state, first_state in zip(resumed["optimizer"]["state"].values(), first["optimizer"]["state"].values()):
        assert param_state["step"] == first_state["step"] + n_updates
    assert not torch.equal(resumed["rng_state"], first["rng_state"])


@ctrl_c_or_kill
def test_ctrl_c_or_kill_saves_a_checkpoint_and_exits_128_plus_signal(monkeypatch, tmp_path, signum, to_group, exit_code):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proc, stderr, summary = interrupt_run("a2c_atari.py", *SHORT, cwd=tmp_path, signum=signum, to_group=to_group)
    assert proc.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    assert summary["interrupted"] is True and summary["global_step"] > 0
    assert load(summary["model_path"])["global_step"] == summary["global_step"]


def test_not_an_atari_game_exits_2_with_one_line(tmp_path):
    proc, _ = run_script("a2c_atari.py", "--env-id", "CartPole-v1", cwd=tmp_path, env=ONE_THREAD)
    assert_bad_input(proc, "CartPole-v1", "Atari")
    assert not (tmp_path / "runs").exists()


def test_compile_without_a_cxx_compiler_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    proc = run_main_in_process(a2c_atari, monkeypatch, capsys, tmp_path, "--total-timesteps", 80, "--eval-episodes", 1)
    assert_bad_input(proc, "C++ compiler", "--no-compile")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (("--n-envs", 0), ("--n-envs",)),
        (("--gamma", 1.5), ("--gamma",)),
        (("--max-episode-frames", 0), ("--max-episode-frames",)),
        (("--resume", "missing.pt"), ("missing.pt",)),
        (("--eval-checkpoint", "missing.pt"), ("missing.pt",)),
    ],
)
def test_bad_input_exits_2_with_one_line(monkeypatch, capsys, tmp_path, args, words):
    assert_bad_input(run_main_in_process(a2c_atari, monkeypatch, capsys, tmp_path, *args), *words)
    assert not (tmp_path / "runs").exists()


def test_checkpoint_of_another_script_or_game_is_refused(monkeypatch, capsys, tmp_path):
    torch.save({"script": "a2c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, tmp_path / "a2c.pt")
    assert_bad_input(run_main_in_process(a2c_atari, monkeypatch, capsys, tmp_path, "--resume", "a2c.pt"), "a2c.pt", "a2c_atari.py")
    torch.save({"script": "a2c_atari.py", "model": {}, "args": {"env_id": "BreakoutNoFrameskip-v4"}}, tmp_path / "breakout.pt")
    proc = run_main_in_process(a2c_atari, monkeypatch, capsys, tmp_path, "--eval-checkpoint", "breakout.pt")
    assert_bad_input(proc, "breakout.pt", "BreakoutNoFrameskip-v4")
