"""Race the scripts against Stable-Baselines3 A2C on the environment suite.

    pip install -r requirements-bench.txt
    python benchmarks/suite.py --systems a2c.py "a3c.py --n-workers 8" --envs CartPole-v1 Acrobot-v1
    python benchmarks/suite.py --systems da2c_nstep.py --envs Pendulum-v1 --seeds 1 2 3 --out benchmarks/results/x
    python benchmarks/suite.py --plot-only --out benchmarks/results/x     # redraw table and figures

The suite (`../shared/CONVENTIONS.md`): each environment with the mean of the last 100 training
episodes that counts as solved, and a budget of environment steps. Every system gets the same
`--env-id --seed --total-timesteps` (and `--target-return` where the suite sets one), in a scratch
directory, one run at a time, interleaved seed by seed and environment by environment so that machine
drift falls on all alike. Time counts from process launch for every system: the run's own
`solved_at_s` plus its start-up, measured as (launch to exit) - `wall_time_s`; a script's clock
starts after its imports, the peer's (`benchmarks/sb3_a2c.py`) before them. A system that refuses an
environment (exit 2) is skipped there and the table says so. HalfCheetah-v5 has no target: it reports
the mean return of the last 100 training episodes after its budget, and the seconds from launch to
its last training episode.

Writes `<out>/suite.json` (every run, with every training episode as (step, seconds from launch, return)), `<out>/suite.md` (medians and ratios to the
peer) and `<out>/<env>.png` (mean return of the last 100 episodes against seconds from launch, a thin
line per run).
"""
import argparse
import json
import math
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
PEER_NAME = "SB3 A2C (rl-zoo)"
SUITE = {  # env id: (target return, or None to report the return after the budget; budget of env steps)
    "CartPole-v1": (475.0, 500_000),
    "Acrobot-v1": (-100.0, 500_000),
    "Pendulum-v1": (-200.0, 1_000_000),
    "InvertedPendulum-v5": (950.0, 300_000),
    "HalfCheetah-v5": (None, 1_000_000),
}


def episodes_of(run_dir, launched):
    """Every training episode of a run as (env step, seconds since launch, return)."""
    if (run_dir / "episodes.json").exists():  # the peer writes its own, with unix times
        return [(step, unix_time - launched, value) for step, unix_time, value in json.loads((run_dir / "episodes.json").read_text())]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "charts/episodic_return" not in events.Tags()["scalars"]:
        return []
    return [(e.step, e.wall_time - launched, e.value) for e in events.Scalars("charts/episodic_return")]


def run_once(command, env_id, seed, budget, timeout_s):
    """One training run to its end in a scratch directory; its summary plus launch-based times."""
    script, *extra = shlex.split(command)
    target, suite_budget = SUITE[env_id]
    argv = [*extra, "--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(budget or suite_budget)]
    if target is not None:
        argv += ["--target-return", str(target)]
    record = dict(command=command, env_id=env_id, seed=seed, argv=argv, status="ok")
    with tempfile.TemporaryDirectory() as cwd:
        launched = time.time()
        try:
            proc = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=cwd, capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {**record, "status": f"timed out after {timeout_s} s"}
        elapsed = time.time() - launched
        summaries = list(Path(cwd).glob("runs/*/summary.json"))
        if proc.returncode == 2:
            return {**record, "status": "refused: " + (proc.stderr.strip().splitlines() or ["exit 2"])[-1]}
        if proc.returncode != 0 or not summaries:
            return {**record, "status": f"failed (exit {proc.returncode})", "stderr": proc.stderr[-3000:]}
        summary = json.loads(summaries[0].read_text())
        episodes = episodes_of(summaries[0].parent, launched)
    startup_s = elapsed - summary["wall_time_s"]
    return {**record, **summary, "elapsed_s": elapsed, "startup_s": startup_s, "training_episodes": episodes,
            "time_to_target_s": summary["solved_at_s"] + startup_s if summary["solved"] else None,
            "train_end_s": max((seconds for _, seconds, _ in episodes), default=None)}


def median_spread(values, fmt):
    """'median [min, max]'; an infinite value (a seed that never reached the target) counts in the median."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not values or not finite:
        return "not reached" if values else "-"
    middle = statistics.median(values)
    text = "not reached" if math.isinf(middle) else f"{middle:{fmt}}"
    return text if len(values) == 1 else f"{text} [{min(finite):{fmt}}, {max(finite):{fmt}}]"


def ratio_to_peer(ours, peer):
    """Median seconds of a system over the peer's (infinite: not reached on most seeds)."""
    if peer is None:
        return "-"
    if math.isinf(peer):
        return "peer not reached" if math.isfinite(ours) else "neither reached"
    return "not reached" if math.isinf(ours) else f"{ours / peer:.2f}x"


def table(runs, commands, envs):
    rows = ["| environment | system | solved | steps to target: median [min, max] | seconds from launch: median [min, max] "
            "| mean-100 return at the end: median [min, max] | steps/s | time vs peer |", "|---|---|---|---|---|---|---|---|"]
    for env_id in envs:
        target = SUITE[env_id][0]
        cells, seconds_median = {}, {}
        for command in commands:
            these = [r for r in runs if r["command"] == command and r["env_id"] == env_id]
            trained = [r for r in these if r["status"] == "ok"]
            if not these:
                continue
            if not trained:
                cells[command] = f"{these[0]['status']} | | | | |"
                continue
            if target is None:  # the return after the budget, and the time the budget took
                seconds = [r["train_end_s"] for r in trained if r["train_end_s"] is not None]
                solved, steps = "-", "-"
            else:
                seconds = [r["time_to_target_s"] if r["solved"] else math.inf for r in trained]
                solved = f"{sum(r['solved'] for r in trained)}/{len(these)}"
                steps = median_spread([r["solved_at_step"] if r["solved"] else math.inf for r in trained], ".0f")
            failed = "; ".join(r["status"] for r in these if r["status"] != "ok")
            finals = [r["train_return_mean100"] for r in trained if r["train_return_mean100"] is not None]
            seconds_median[command] = statistics.median(seconds) if seconds else math.inf
            cells[command] = (f"{solved}{f' ({failed})' if failed else ''} | {steps} | {median_spread(seconds, '.1f')} "
                              f"| {median_spread(finals, '.1f')} | {statistics.median(r['sps'] for r in trained):.0f}")
        for command, cell in cells.items():
            name = PEER_NAME if command == PEER else f"`{command}`"
            ratio = "-" if command == PEER or command not in seconds_median else ratio_to_peer(seconds_median[command], seconds_median.get(PEER))
            rows.append(f"| {env_id} | {name} | {cell} | {ratio} |")
    return "\n".join(rows)


def mean100(episodes):
    """(seconds since launch, mean return of the last 100 episodes so far) after each episode."""
    episodes = sorted(episodes, key=lambda episode: episode[1])
    returns = [value for _, _, value in episodes]
    return [seconds for _, seconds, _ in episodes], [statistics.fmean(returns[max(0, i - 99): i + 1]) for i in range(len(returns))]


def plot(runs, commands, envs, machine, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for env_id in envs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for index, command in enumerate(commands):
            color = f"C{index}"
            curves = [mean100(r["training_episodes"]) for r in runs
                      if r["command"] == command and r["env_id"] == env_id and r.get("training_episodes")]
            for i, (seconds, values) in enumerate(curves):
                ax.plot(seconds, values, color=color, linewidth=0.8, linestyle="--" if command == PEER else "-",
                        label=(PEER_NAME if command == PEER else command) if i == 0 else None)
        if SUITE[env_id][0] is not None:
            ax.axhline(SUITE[env_id][0], color="gray", linewidth=0.8, linestyle=":")
        finish_figure(fig, ax, "seconds from launch", f"{env_id}: one line per seed; {machine}", out / f"{env_id}.png")


def finish_figure(fig, ax, xlabel, title, path):
    """Label a figure of mean-100 returns, save it to `path` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean return of the last 100 episodes")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="*", default=["a2c.py"], help="script commands, each one string with its arguments (none: the peer alone)")
    parser.add_argument("--no-peer", action="store_true", help="leave out Stable-Baselines3 A2C")
    parser.add_argument("--envs", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--total-timesteps", type=int, default=None, help="one budget for every environment (default: the suite's)")
    parser.add_argument("--timeout-s", type=float, default=3600, help="a run that takes longer is stopped and reported")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/suite"), help="folder for suite.json, suite.md, figures")
    parser.add_argument("--plot-only", action="store_true", help="redraw the table and figures from <out>/suite.json")
    args = parser.parse_args()
    out = Path(args.out)

    if args.plot_only:
        saved = json.loads((out / "suite.json").read_text())
        runs, machine = saved["runs"], saved["machine"]
        commands = list(dict.fromkeys(r["command"] for r in runs))
        envs = list(dict.fromkeys(r["env_id"] for r in runs))
    else:
        commands = args.systems + ([] if args.no_peer else [PEER])
        envs, runs = args.envs, []
        machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU, {time.strftime('%Y-%m-%d')}"
        for seed in args.seeds:
            for env_id in envs:
                for command in commands:
                    if any(r["command"] == command and r["env_id"] == env_id and r["status"].startswith("refused") for r in runs):
                        continue  # it refused this environment on an earlier seed
                    run = run_once(command, env_id, seed, args.total_timesteps, args.timeout_s)
                    runs.append(run)
                    print(f"{env_id:20s} seed {seed}  {command:36s} {run['status']:8s} solved_at_step={run.get('solved_at_step')} "
                          f"time_to_target_s={run.get('time_to_target_s') and round(run['time_to_target_s'], 1)} "
                          f"mean100={run.get('train_return_mean100') and round(run['train_return_mean100'], 1)}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        saved = {"machine": machine, "argv": sys.argv[1:], "suite": {env_id: SUITE[env_id] for env_id in envs}, "runs": runs}
        (out / "suite.json").write_text(json.dumps(saved, indent=1))
    markdown = table(runs, commands, envs)
    command_line = f"python benchmarks/suite.py {' '.join(map(shlex.quote, saved['argv']))}"
    (out / "suite.md").write_text(f"{markdown}\n\n{machine}; `{command_line}`\n")
    print(f"\n{markdown}\n\n{machine}; `{command_line}`")
    plot(runs, commands, envs, machine, out)


if __name__ == "__main__":
    main()
