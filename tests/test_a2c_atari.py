"""a2c_atari.py: the return math, the network on uint8 frames, a smoke run on real ALE Pong with
its checkpoint, --eval-checkpoint, --resume, Ctrl-C, and bad input."""
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_bad_input, assert_vector_nstep_returns_match_brute_force, interrupt_run, run_script

sys.path.insert(0, str(REPO))
import a2c_atari  # noqa: E402  (importing a script has no side effects)

SMOKE = ("--total-timesteps", 3000, "--n-envs", 8, "--eval-episodes", 1, "--checkpoint-interval-s", 0.5)


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


def test_bf16_body_returns_float32_close_to_the_float32_network():
    torch.manual_seed(0)
    model = a2c_atari.ActorCritic(n_actions=6)
    compute_model = copy.deepcopy(model)  # as --bf16 makes it
    compute_model.body.to(torch.bfloat16)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        want_logits, want_value = model(frames)
        logits, value = compute_model(frames)
    assert logits.dtype == value.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: agreement to about 1% of the outputs' scale
    torch.testing.assert_close(logits, want_logits, rtol=0.05, atol=0.02 * want_logits.abs().max().item())
    torch.testing.assert_close(value, want_value, rtol=0.05, atol=0.02 * want_value.abs().max().item())


@pytest.mark.parametrize("body_dtype", [torch.float32, torch.bfloat16])
def test_deferred_weight_gradient_equals_backpropagation_step_by_step(body_dtype):
    """Three forward passes, as in a rollout, then one backward: every gradient must match the same
    network with a plain nn.Linear, whose weight gradient autograd sums step by step."""
    torch.manual_seed(0)
    model = a2c_atari.ActorCritic(n_actions=6)
    reference = copy.deepcopy(model)
    reference.body[7] = torch.nn.Linear(64 * 7 * 7, 512)
    reference.body[7].load_state_dict(model.body[7].state_dict())
    model.body.to(body_dtype)
    reference.body.to(body_dtype)
    frames = [torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8) for _ in range(3)]
    for network in (model, reference):
        loss = sum(((step + 1) * logits.logsumexp(-1) + value**2).sum() for step, batch in enumerate(frames) for logits, value in [network(batch)])
        loss.backward()
    model.accumulate_weight_grad()
    assert model.body[7].pending == []
    # float32: the same sum in another order; bfloat16: products rounded before the sum
    tolerance = 1e-2 if body_dtype == torch.bfloat16 else 1e-5
    for (name, param), want in zip(model.named_parameters(), reference.parameters()):
        assert param.grad.dtype == param.dtype, name
        torch.testing.assert_close(param.grad, want.grad, rtol=tolerance, atol=tolerance * want.grad.abs().max().item(), msg=name)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("atari_smoke")
    proc, summary = run_script("a2c_atari.py", *SMOKE, cwd=cwd)
    return cwd, proc, summary


def test_smoke_run_on_pong_writes_summary_events_and_checkpoint(smoke):
    cwd, proc, summary = smoke
    assert proc.returncode == 0, proc.stderr
    assert summary["script"] == "a2c_atari.py" and summary["env_id"] == "PongNoFrameskip-v4"
    assert summary["global_step"] >= 3000 and summary["target_return"] == 18.0
    assert summary["solved"] is False and summary["interrupted"] is False
    assert summary["eval_episodes"] == 1 and -21 <= summary["eval_return_mean"] <= 21
    run_dir = Path(summary["model_path"]).parent
    assert list((cwd / run_dir).glob("events.out.tfevents.*"))
    checkpoint = torch.load(cwd / summary["model_path"], weights_only=True)
    assert checkpoint["script"] == "a2c_atari.py" and checkpoint["global_step"] == summary["global_step"]
    assert {"model", "optimizer", "args", "run_dir", "recent_returns"} <= set(checkpoint)


def test_eval_checkpoint_plays_greedy_games(smoke):
    cwd, _, summary = smoke
    proc, _ = run_script("a2c_atari.py", "--eval-checkpoint", summary["model_path"], "--eval-episodes", 2, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "over 2 episodes" in proc.stdout


def test_resume_continues_the_run_in_its_directory(smoke, tmp_path):
    cwd, _, first = smoke
    proc, _ = run_script("a2c_atari.py", "--resume", first["model_path"], "--total-timesteps", 6000, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert resumed["model_path"] == first["model_path"]  # same run directory, same file
    assert 6000 <= resumed["global_step"] < 6000 + 8 * a2c_atari.Args.n_steps
    assert resumed["wall_time_s"] > first["wall_time_s"]  # the clock goes on from the first part
    assert len(list((cwd / Path(first["model_path"]).parent).glob("events.out.tfevents.*"))) == 2


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    proc, stderr, summary = interrupt_run("a2c_atari.py", "--n-envs", 8, cwd=tmp_path)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert summary["interrupted"] is True and summary["global_step"] > 0
    checkpoint = torch.load(tmp_path / summary["model_path"], weights_only=True)
    assert checkpoint["global_step"] == summary["global_step"]


@pytest.mark.parametrize(
    "args, words",
    [
        (("--env-id", "CartPole-v1"), ("CartPole-v1", "Atari")),
        (("--n-envs", 0), ("--n-envs",)),
        (("--gamma", 1.5), ("--gamma",)),
        (("--resume", "missing.pt"), ("missing.pt",)),
        (("--eval-checkpoint", "missing.pt"), ("missing.pt",)),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, words):
    proc, _ = run_script("a2c_atari.py", *args, cwd=tmp_path)
    assert_bad_input(proc, *words)
    assert not (tmp_path / "runs").exists()


def test_checkpoint_of_another_script_is_refused(tmp_path):
    torch.save({"script": "a2c.py", "model": {}, "args": {"env_id": "CartPole-v1"}}, tmp_path / "a2c.pt")
    proc, _ = run_script("a2c_atari.py", "--resume", "a2c.pt", cwd=tmp_path)
    assert_bad_input(proc, "a2c.pt", "a2c_atari.py")
