r"""Whether a2c_atari.py's first convolution stays alive while it trains.

    python benchmarks/conv_alive.py --log alive.tsv -- --seed 1 --total-timesteps 400000
    python benchmarks/conv_alive.py --optimizer rmsprop --log alive.tsv -- --seed 1 \
        --learning-rate 7e-4 --adam-eps 3.16e-3

Runs a2c_atari.py's own main() (everything after `--` is its command line) with a forward hook on the
first ReLU, and every `--every` updates appends a line to `--log`: the agent step and the share of
that ReLU's outputs that were positive on the frames seen since the last line. A share of 0 is a dead
network: no output of the first convolution is positive, so the policy no longer sees the screen.
`--optimizer rmsprop` replaces the file's Adam by torch.optim.RMSprop (alpha 0.99) with the file's
--learning-rate and --adam-eps as its eps: an experiment, not an option of the file.
"""
import argparse
import sys
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a2c_atari  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="tab-separated lines: agent step, share of positive outputs")
    parser.add_argument("--every", type=int, default=50, help="updates between lines")
    parser.add_argument("--optimizer", choices=["adam", "rmsprop"], default="adam")
    parser.add_argument("script_args", nargs="*", help="a2c_atari.py's arguments, after --")
    args = parser.parse_args()
    run_args = tyro.cli(a2c_atari.Args, args=args.script_args)
    steps_per_update = run_args.n_envs * run_args.n_steps
    positive, seen, updates = 0, 0, 0
    log = open(args.log, "a")

    def record(module, inputs, output):
        nonlocal positive, seen
        positive += (output > 0).sum().item()
        seen += output.numel()

    class HookedActorCritic(a2c_atari.ActorCritic):
        def __init__(self, n_actions):
            super().__init__(n_actions)
            self.body[1].register_forward_hook(record)

    def after_update(optimizer, *_):
        nonlocal positive, seen, updates
        updates += 1
        if updates % args.every == 0:  # a resumed run counts its steps from the resume
            print(f"{updates * steps_per_update}\t{positive / seen:.4f}", file=log, flush=True)
            positive, seen = 0, 0

    adam = torch.optim.Adam

    def make_optimizer(params, lr, eps, fused):
        if args.optimizer == "rmsprop":
            optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps)
        else:
            optimizer = adam(params, lr=lr, eps=eps, fused=fused)
        optimizer.register_step_post_hook(after_update)
        return optimizer

    a2c_atari.ActorCritic = HookedActorCritic
    torch.optim.Adam = make_optimizer
    sys.argv = ["a2c_atari.py", *args.script_args]
    a2c_atari.main()


if __name__ == "__main__":
    main()
