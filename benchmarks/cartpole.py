"""Time and steps to solve CartPole-v1: our scripts side by side with Stable-Baselines3 A2C.

    pip install -r requirements-bench.txt
    python benchmarks/cartpole.py                                    # a2c.py and the peer, seeds 1-5
    python benchmarks/cartpole.py --scripts a2c.py "a3c.py --n-workers 8" --seeds 1 2 3

Runs are interleaved (seed 1 of every script, then seed 2, ...) so that machine noise falls on all
alike, one at a time. Time to solve counts from process launch: the script's own `solved_at_s` (from
the top of its main()) plus the interpreter start and imports before it, which this benchmark
measures as (time from launch to exit) - `wall_time_s`. Prints a markdown table, writes the raw
results (with every training episode) to benchmarks/results/cartpole.json and draws
docs/cartpole.png; `--plot-only` redraws the table and figure from that file.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = "benchmarks/sb3_a2c.py"
WORKER_MODEL = {"a2c.py": "sync vectorized", "a3c.py": "async shared-memory", "gae.py": "async shared-memory",
                "da2c_nstep.py": "sync distributed", PEER: "sync vectorized"}


def lines_of_code(script):
    """Lines that are not blank and not only a comment (docstrings count)."""
    lines = (REPO / script).read_text().splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def episodes_of(run_dir, launched):
    """Every training episode of a run as (env step, seconds since launch, return)."""
    if (run_dir / "episodes.json").exists():  # the peer writes its own
        return [(step, seconds, value) for step, seconds, value in json.loads((run_dir / "episodes.json").read_text())]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.wall_time - launched, e.value) for e in events.Scalars("charts/episodic_return")]


def run_once(command, seed):
    """Run one training to the end in a scratch directory; return its summary with launch-based times."""
    script, *extra = shlex.split(command)
    with tempfile.TemporaryDirectory() as cwd:
        launched = time.time()
        proc = subprocess.run([sys.executable, str(REPO / script), *extra, "--seed", str(seed)],
                              cwd=cwd, capture_output=True, text=True)
        elapsed = time.time() - launched
        summaries = list(Path(cwd).glob("runs/*/summary.json"))
        if proc.returncode != 0 or not summaries:
            raise SystemExit(f"{command} --seed {seed} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        summary = json.loads(summaries[0].read_text())
        episodes = episodes_of(summaries[0].parent, launched)
    startup_s = elapsed - summary["wall_time_s"]
    if script == PEER:  # its clock starts after the interpreter, like ours
        episodes = [(step, seconds + startup_s, value) for step, seconds, value in episodes]
    summary.update(command=command, elapsed_s=elapsed, startup_s=startup_s, episodes=episodes,
                   time_to_solve_s=summary["solved_at_s"] + startup_s if summary["solved"] else None)
    return summary


def spread(values, fmt):
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def table(results, commands):
    peer_times = [r["time_to_solve_s"] for r in results if r["command"] == PEER and r["solved"]]
    rows = ["| script | worker model | lines | solved | time to solve, s: median [min-max] | steps to solve: median [min-max] | SPS (median) | greedy eval return | time vs peer |",
            "|---|---|---|---|---|---|---|---|---|"]
    for command in commands:
        runs = [r for r in results if r["command"] == command]
        solved = [r for r in runs if r["solved"]]
        times = [r["time_to_solve_s"] for r in solved]
        evals = [r["eval_return_mean"] for r in runs if r.get("eval_return_mean") is not None]
        ratio = f"{statistics.median(times) / statistics.median(peer_times):.0%}" if times and peer_times and len(solved) == len(runs) else "-"
        name = "SB3 A2C (rl-zoo)" if command == PEER else command
        script = shlex.split(command)[0]
        rows.append(f"| {name} | {WORKER_MODEL.get(script, '-')} | {'-' if script == PEER else lines_of_code(script)} | {len(solved)}/{len(runs)} | {spread(times, '.1f')} | {spread([r['solved_at_step'] for r in solved], '.0f')} "
                    f"| {statistics.median(r['sps'] for r in runs):.0f} | {spread(evals, '.0f')} | {ratio} |")
    return "\n".join(rows)


def mean100_curve(episodes, grid, axis):
    """Mean return of the last 100 episodes, sampled on `grid` along steps (axis 0) or seconds (axis 1).
    Before the first 100 episodes it is the mean so far; after the run ended (it stops at the target)
    the curve holds its last value."""
    import numpy as np

    episodes = sorted(episodes, key=lambda episode: episode[axis])
    positions = np.array([episode[axis] for episode in episodes])
    returns = np.array([episode[2] for episode in episodes])
    running = np.array([returns[max(0, i - 99): i + 1].mean() for i in range(len(returns))])
    index = np.searchsorted(positions, grid, side="right") - 1
    return np.where(index >= 0, running[np.maximum(index, 0)], np.nan)


def plot(results, commands, machine, path):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)  # grid points before any run's first episode are all-NaN
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, (ax, label) in enumerate(zip(axes, ["environment steps", "seconds from launch"])):
        end = max(max(episode[axis] for episode in r["episodes"]) for r in results)
        grid = np.linspace(0, end, 400)
        for command in commands:
            curves = np.array([mean100_curve(r["episodes"], grid, axis) for r in results if r["command"] == command])
            name = "SB3 A2C (rl-zoo)" if command == PEER else command
            line, = ax.plot(grid, np.nanmedian(curves, axis=0), label=name, linestyle="--" if command == PEER else "-")
            ax.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=line.get_color(), alpha=0.15)
        ax.axhline(475, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean return of the last 100 episodes")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"CartPole-v1: median and range over seeds; {machine}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", nargs="+", default=["a2c.py"], help="script commands, each one string with its arguments")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--no-peer", action="store_true", help="leave out Stable-Baselines3 A2C")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cartpole.json"))
    parser.add_argument("--figure", default=str(REPO / "docs/cartpole.png"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the table and figure from --out, run nothing")
    args = parser.parse_args()

    if args.plot_only:
        saved = json.loads(Path(args.out).read_text())
        commands = list(dict.fromkeys(r["command"] for r in saved["runs"]))
        print(table(saved["runs"], commands))
        plot(saved["runs"], commands, saved["machine"], args.figure)
        return
    commands = args.scripts + ([] if args.no_peer else [PEER])
    results = []
    for seed in args.seeds:
        for command in commands:
            result = run_once(command, seed)
            results.append(result)
            print(f"seed {seed}  {command:40s} solved={result['solved']} steps={result['solved_at_step']} "
                  f"time={result['time_to_solve_s'] and round(result['time_to_solve_s'], 1)} s", flush=True)

    machine = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU used, {time.strftime('%Y-%m-%d')}"
    markdown = table(results, commands)
    print(f"\n{markdown}\n\n{machine}; `python benchmarks/cartpole.py {' '.join(map(shlex.quote, sys.argv[1:]))}`")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "argv": sys.argv[1:], "table": markdown, "runs": results}, f, indent=2)
    plot(results, commands, machine, args.figure)


if __name__ == "__main__":
    main()
