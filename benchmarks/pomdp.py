"""Recurrent against feed-forward workers on a partially observed CartPole: CartPole-v1 without its velocities.

    python benchmarks/pomdp.py                                     # a3c.py --lstm against a3c.py, seeds 1-3
    python benchmarks/pomdp.py --systems "gae.py --n-workers 8 --lstm" "gae.py --n-workers 8" --seeds 1
    python benchmarks/pomdp.py --plot-only --out benchmarks/results/pomdp        # redraw table and figure

A sibling of `suite.py` (its runner and table; no peer: Stable-Baselines3 has no recurrent A2C). Every
system gets the same `--env-id --seed --total-timesteps --target-return 475`, one run at a time, seed by
seed. The task is `tests/pomdp_cartpole.py` (position and angle only), reached by the scripts as
`tests.pomdp_cartpole:CartPoleNoVelocity-v0`. Writes `<out>/pomdp.json` (every run, every training
episode), `<out>/pomdp.md` (suite.py's table) and `<out>/pomdp.png`: the mean return of the last 100
training episodes against environment steps (not seconds: steps do not depend on the machine's load).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

ENV_ID = "tests.pomdp_cartpole:CartPoleNoVelocity-v0"
TARGET = 475.0


def mean100_by_step(episodes):
    """(env step, mean return of the last 100 episodes so far) after each episode."""
    episodes = sorted(episodes)
    returns = [value for _, _, value in episodes]
    return [step for step, _, _ in episodes], [statistics.fmean(returns[max(0, i - 99): i + 1]) for i in range(len(returns))]


def plot(runs, commands, machine, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for index, command in enumerate(commands):
        for i, run in enumerate(r for r in runs if r["command"] == command and r.get("training_episodes")):
            steps, values = mean100_by_step(run["training_episodes"])
            ax.plot(steps, values, color=f"C{index}", linewidth=0.8, label=command if i == 0 else None)
    ax.axhline(TARGET, color="gray", linewidth=0.8, linestyle=":")
    title = f"CartPole-v1 without velocities: one line per seed; {machine}"
    suite.finish_figure(fig, ax, "environment steps (all workers)", title, out / "pomdp.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["a3c.py --n-workers 8 --lstm", "a3c.py --n-workers 8"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--total-timesteps", type=int, default=500_000, help="the budget of every run")
    parser.add_argument("--timeout-s", type=float, default=3600, help="a run that takes longer is stopped and reported")
    parser.add_argument("--out", default=str(suite.REPO / "benchmarks/results/pomdp"), help="folder for pomdp.json, .md, .png")
    parser.add_argument("--plot-only", action="store_true", help="redraw the table and figure from <out>/pomdp.json")
    args = parser.parse_args()
    out = Path(args.out)

    if args.plot_only:
        saved = json.loads((out / "pomdp.json").read_text())
    else:
        suite.SUITE[ENV_ID] = (TARGET, args.total_timesteps)  # run_once reads the target and budget from here
        machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU, {time.strftime('%Y-%m-%d')}"
        runs = []
        for seed in args.seeds:
            for command in args.systems:
                run = suite.run_once(command, ENV_ID, seed, args.total_timesteps, args.timeout_s)
                runs.append(run)
                print(f"seed {seed}  {command:36s} {run['status']:8s} solved_at_step={run.get('solved_at_step')} "
                      f"mean100={run.get('train_return_mean100') and round(run['train_return_mean100'], 1)} "
                      f"eval={run.get('eval_return_mean')}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        saved = {"machine": machine, "argv": sys.argv[1:], "budget": args.total_timesteps, "runs": runs}
        (out / "pomdp.json").write_text(json.dumps(saved, indent=1))
    runs, machine = saved["runs"], saved["machine"]
    suite.SUITE[ENV_ID] = (TARGET, saved["budget"])
    commands = list(dict.fromkeys(r["command"] for r in runs))
    markdown = suite.table(runs, commands, [ENV_ID])
    command_line = f"python benchmarks/pomdp.py {' '.join(map(shlex.quote, saved['argv']))}"
    (out / "pomdp.md").write_text(f"{markdown}\n\n{machine}; `{command_line}`\n")
    print(f"\n{markdown}\n\n{machine}; `{command_line}`")
    plot(runs, commands, machine, out)


if __name__ == "__main__":
    main()
