"""Time and steps to solve CartPole-v1: our scripts side by side with Stable-Baselines3 A2C.

    pip install -r requirements-bench.txt
    python benchmarks/cartpole.py                                    # a2c.py and the peer, seeds 1-5
    python benchmarks/cartpole.py --scripts a2c.py "a3c.py --n-workers 8" --seeds 1 2 3

Runs are interleaved (seed 1 of every script, then seed 2, ...) so that machine noise falls on all
alike, one at a time. Time to solve counts from process launch: the script's own `solved_at_s` (from
the top of its main()) plus the interpreter start and imports before it, which this benchmark
measures as (time from launch to exit) - `wall_time_s`. Prints a markdown table and writes the raw
results to benchmarks/results/cartpole.json.
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
    startup_s = elapsed - summary["wall_time_s"]
    summary.update(command=command, elapsed_s=elapsed, startup_s=startup_s,
                   time_to_solve_s=summary["solved_at_s"] + startup_s if summary["solved"] else None)
    return summary


def spread(values, fmt):
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def table(results, commands):
    peer_times = [r["time_to_solve_s"] for r in results if r["command"] == PEER and r["solved"]]
    rows = ["| script | solved | time to solve, s: median [min-max] | steps to solve: median [min-max] | SPS (median) | greedy eval return | time vs peer |",
            "|---|---|---|---|---|---|---|"]
    for command in commands:
        runs = [r for r in results if r["command"] == command]
        solved = [r for r in runs if r["solved"]]
        times = [r["time_to_solve_s"] for r in solved]
        evals = [r["eval_return_mean"] for r in runs if r.get("eval_return_mean") is not None]
        ratio = f"{statistics.median(times) / statistics.median(peer_times):.0%}" if times and peer_times and len(solved) == len(runs) else "-"
        name = "SB3 A2C (rl-zoo)" if command == PEER else command
        rows.append(f"| {name} | {len(solved)}/{len(runs)} | {spread(times, '.1f')} | {spread([r['solved_at_step'] for r in solved], '.0f')} "
                    f"| {statistics.median(r['sps'] for r in runs):.0f} | {spread(evals, '.0f')} | {ratio} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", nargs="+", default=["a2c.py"], help="script commands, each one string with its arguments")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--no-peer", action="store_true", help="leave out Stable-Baselines3 A2C")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cartpole.json"))
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
