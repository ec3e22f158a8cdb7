"""What a bfloat16 body would do to a2c_atari.py's gradient, on one rollout of real Pong frames.

    python benchmarks/bf16_precision.py                                  # the freshly initialised network
    python benchmarks/bf16_precision.py runs/.../a2c_atari.pt [...]      # saved networks

For each network: play 300 steps in 16 games with its policy, record a 5-step rollout and compute the
loss as a2c_atari.py does. Then print
- the norms of the policy loss's and the value loss's gradients on the convolutional body (float32);
- per body parameter, the cosine between the float32 policy gradient and the policy part of the
  gradient of a copy whose convolutional body is bfloat16 (heads float32; the copy that a2c_atari.py's
  `--bf16` made until 2026-11-27): its gradient of the whole loss minus its gradient of the value
  loss alone; 1 when bfloat16 keeps the policy's signal, near 0 when rounding has swamped it;
- the fraction of each ReLU's outputs that are positive on the rollout's frames (0 after the first
  convolution: a dead network, whose policy can no longer see the screen).
"""
import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Categorical

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a2c_atari  # noqa: E402


def forward(model, frames):
    """The network on uint8 frames, its body in whatever type its weights are, the heads in float32."""
    hidden = model.body(frames.to(model.body[0].weight.dtype) / 255.0).float()
    return model.policy_head(hidden), model.value_head(hidden).squeeze(-1)


def rollout(model, n_envs=16, n_steps=5, warmup=300):
    """Frames, actions and n-step returns of one rollout, played with the model's policy."""
    envs = a2c_atari.make_env(a2c_atari.Args(), n_envs)
    obs, _ = envs.reset(seed=1)

    def act(frames):
        with torch.no_grad():
            return Categorical(logits=forward(model, torch.as_tensor(frames))[0]).sample().numpy()

    for _ in range(warmup):
        obs, *_ = envs.step(act(obs))
    frames, actions, rewards, dones = [], [], [], []
    for _ in range(n_steps):
        action = act(obs)
        frames.append(torch.as_tensor(obs))
        actions.append(torch.as_tensor(action))
        obs, reward, terminated, truncated, _ = envs.step(action)
        rewards.append(np.sign(reward))
        dones.append(terminated | truncated)
    with torch.no_grad():
        last_value = forward(model, torch.as_tensor(obs))[1]
    envs.close()
    returns = a2c_atari.nstep_returns(
        torch.as_tensor(np.stack(rewards)).float(), torch.as_tensor(np.stack(dones)), torch.zeros(n_steps, n_envs), last_value, 0.99
    )
    return torch.cat(frames), torch.cat(actions), returns.flatten()


def body_gradient(model, frames, actions, returns, part):
    """Gradient on the body's parameters of the policy loss, the value loss or both (as float32)."""
    model.zero_grad()
    logits, values = forward(model, frames)
    policy = Categorical(logits=logits)
    policy_loss = -((returns - values).detach() * policy.log_prob(actions)).mean() - 0.01 * policy.entropy().mean()
    value_loss = 0.5 * (returns - values).pow(2).mean()
    {"policy": policy_loss, "value": value_loss, "all": policy_loss + value_loss}[part].backward()
    return [param.grad.float().flatten() for param in model.body.parameters()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="a2c_atari.py checkpoints (none: a new network, seed 0)")
    args = parser.parse_args()
    torch.manual_seed(0)
    for path in args.checkpoints or [None]:
        model = a2c_atari.ActorCritic(6)
        if path:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        frames, actions, returns = rollout(model)
        bf16_model = copy.deepcopy(model)
        bf16_model.body.to(torch.bfloat16)

        policy_grad = body_gradient(model, frames, actions, returns, "policy")
        value_grad = body_gradient(model, frames, actions, returns, "value")
        bf16_all = body_gradient(bf16_model, frames, actions, returns, "all")
        bf16_value = body_gradient(bf16_model, frames, actions, returns, "value")
        norm = lambda grads: float(torch.cat(grads).norm())
        cosines = [float(torch.cosine_similarity(a - v, p, dim=0)) for a, v, p in zip(bf16_all, bf16_value, policy_grad)]

        hidden, alive = frames.float() / 255.0, []
        with torch.no_grad():
            for layer in model.body:
                hidden = layer(hidden)
                if isinstance(layer, torch.nn.ReLU):
                    alive.append(float((hidden > 0).float().mean()))
        print(path or "new network (seed 0)")
        print(f"  body gradient norm: policy {norm(policy_grad):.2e}, value {norm(value_grad):.2e} (value/policy {norm(value_grad) / norm(policy_grad):.3g})")
        print("  cosine, bf16 policy part against float32, per parameter:", " ".join(f"{c:.3f}" for c in cosines))
        print("  positive ReLU outputs, per layer:", " ".join(f"{a:.3f}" for a in alive))


if __name__ == "__main__":
    main()
