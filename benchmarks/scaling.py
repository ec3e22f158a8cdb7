"""Worker scaling on CartPole-v1: steps per second of a3c.py and da2c_nstep.py at 1, 2, 4 and 8 workers.

    pip install -r requirements-bench.txt
    python benchmarks/scaling.py                        # 2 rounds, both scripts, 1 2 4 8 workers
    python benchmarks/scaling.py --scripts a3c.py --workers 1 2 --rounds 3

Each run trains a fixed budget with `--no-stop-at-target` (so every worker count does the same work
whatever it learns). Its throughput is read from the `charts/SPS` events the run logs while it
trains: environment steps summed over workers between the first and the last event, divided by the
wall-clock time between them, so the start of the processes and the final evaluation are left out
(the A3C paper's speedups are training throughput too). The `sps` of summary.json, which counts them,
is kept beside it in the results file. Rounds alternate worker counts and scripts so that machine
noise falls on all alike; the figure and table give the median of the rounds. Each round also runs
1, 2, 4 and 8 copies of a pure-Python loop side by side, which share nothing: their throughput is
what the machine itself gives to more processes, a reference for the scripts' scaling (itself noisy
on a shared virtual machine). Writes
benchmarks/results/scaling.json and docs/scaling.png.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET = {"a3c.py": 150_000, "gae.py": 150_000, "da2c_nstep.py": 400_000}
LOOP = "total = 0\nfor i in range(10_000_000): total += i"  # about a second of one core, nothing shared


def run_sps(script, n_workers, steps):
    with tempfile.TemporaryDirectory() as cwd:
        command = [sys.executable, str(REPO / script), "--n-workers", str(n_workers), "--total-timesteps", str(steps),
                   "--no-stop-at-target", "--eval-episodes", "1", "--no-save-model"]
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{script} --n-workers {n_workers} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        summary = json.loads(next(Path(cwd).glob("runs/*/summary.json")).read_text())
        return training_sps(next(Path(cwd).glob("runs/*/events.out.tfevents.*"))), summary["sps"]


def loop_throughput(n_processes):
    """Loops finished per second by n independent processes started together."""
    started = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", LOOP]) for _ in range(n_processes)]
    for proc in procs:
        proc.wait()
    return n_processes / (time.time() - started)


def training_sps(events_file):
    """Steps per second between the first and the last `charts/SPS` event of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(events_file), size_guidance={"scalars": 0}).Reload().Scalars("charts/SPS")
    if len(events) < 2:
        raise SystemExit(f"{events_file}: fewer than two charts/SPS events; raise the step budget")
    return (events[-1].step - events[0].step) / (events[-1].wall_time - events[0].wall_time)


def ratio(by_workers, a, b):
    """Throughput at a workers over that at b, as text."""
    return f"{by_workers[str(a)] / by_workers[str(b)]:.2f}x" if str(a) in by_workers and str(b) in by_workers else "-"


def plot(medians, workers, machine, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for script, by_workers in medians.items():
        ax.plot(workers, [by_workers[str(n)] for n in workers], marker="o", label=script)
    ax.set_xscale("log", base=2)
    ax.set_xticks(workers, [str(n) for n in workers])
    ax.set_xlabel("workers (processes)")
    ax.set_ylabel("environment steps per second while training")
    ax.set_ylim(bottom=0)
    ax.set_title(f"CartPole-v1 throughput, {machine.split(',')[0]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", nargs="+", default=["a3c.py", "da2c_nstep.py"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/scaling.json"))
    parser.add_argument("--figure", default=str(REPO / "docs/scaling.png"))
    args = parser.parse_args()

    runs = {script: {str(n): [] for n in args.workers} for script in args.scripts}
    whole_runs = {script: {str(n): [] for n in args.workers} for script in args.scripts}
    loops = {str(n): [] for n in args.workers}
    for round_index in range(args.rounds):
        for n_workers in args.workers:
            loops[str(n_workers)].append(loop_throughput(n_workers))
            for script in args.scripts:
                sps, whole_run_sps = run_sps(script, n_workers, BUDGET[script])
                runs[script][str(n_workers)].append(round(sps))
                whole_runs[script][str(n_workers)].append(whole_run_sps)
                print(f"round {round_index + 1}  {script:14s} workers {n_workers}: {sps:.0f} SPS while training, "
                      f"{whole_run_sps} over the whole run", flush=True)

    medians = {script: {n: statistics.median(values) for n, values in by_workers.items()} for script, by_workers in runs.items()}
    rows = ["| script | " + " | ".join(f"{n} workers" for n in args.workers) + " | 2 vs 1 | 8 vs 2 |",
            "|---|" + "---|" * (len(args.workers) + 2)]
    for script, by_workers in medians.items():
        rows.append(f"| {script} | " + " | ".join(f"{by_workers[str(n)]:.0f}" for n in args.workers)
                    + f" | {ratio(by_workers, 2, 1)} | {ratio(by_workers, 8, 2)} |")
    loop = {n: statistics.median(values) for n, values in loops.items()}
    rows.append("| pure-Python loops, nothing shared (the machine) | " + " | ".join(ratio(loop, n, args.workers[0]) for n in args.workers)
                + f" | {ratio(loop, 2, 1)} | {ratio(loop, 8, 2)} |")
    markdown = "\n".join(rows)
    machine = f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU used, {time.strftime('%Y-%m-%d')}"
    print(f"\n{markdown}\n\nsteps per second while training (the loops: throughput relative to one), median of {args.rounds} rounds; {machine}; `python benchmarks/scaling.py {' '.join(sys.argv[1:])}`")
    plot(medians, args.workers, machine, args.figure)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "argv": sys.argv[1:], "table": markdown, "runs": runs, "whole_run_sps": whole_runs,
                   "loops_per_s": loops}, f, indent=2)


if __name__ == "__main__":
    main()
