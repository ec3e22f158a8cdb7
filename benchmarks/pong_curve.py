"""The learning curve of one a2c_atari.py run, from its TensorBoard events, as docs/pong.png.

    python a2c_atari.py                                        # the run (about an hour on 2 CPU cores)
    python benchmarks/pong_curve.py runs/PongNoFrameskip-v4__a2c_atari__1__<time>

Plots every game's score and the mean of the last 100 games against agent steps and against wall-clock
hours (the events' own timestamps, from the start time in the run directory's name; a resumed run's
pause shows as a gap), and prints the steps and time at
which the mean of 100 first reached each of -20, 0, 10, 18.
"""
import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--figure", default=str(REPO / "docs/pong.png"))
    parser.add_argument("--caption", default="", help="a line under the title (machine, command, date)")
    args = parser.parse_args()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(args.run_dir, size_guidance={"scalars": 0})
    events.Reload()
    episodes = sorted(events.Scalars("charts/episodic_return"), key=lambda e: e.step)
    steps = np.array([e.step for e in episodes])
    scores = np.array([e.value for e in episodes])
    start = int(Path(args.run_dir).resolve().name.rsplit("__", 1)[1])  # runs/{env}__{exp}__{seed}__{unix start time}
    hours = (np.array([e.wall_time for e in episodes]) - start) / 3600
    mean100 = np.array([scores[max(0, i - 99): i + 1].mean() for i in range(len(scores))])
    for level in (-20, 0, 10, 18):
        reached = np.flatnonzero((mean100 >= level) & (np.arange(len(scores)) >= 99))
        if len(reached):
            i = reached[0]
            print(f"mean of 100 games >= {level}: step {steps[i]}, {hours[i] * 60:.1f} min")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x, label in ((axes[0], steps / 1e6, "agent steps (millions; 4 frames each)"), (axes[1], hours * 60, "minutes of training")):
        ax.plot(x, scores, ".", markersize=2, alpha=0.3, color="tab:blue", label="score of one game")
        ax.plot(x, mean100, color="tab:blue", label="mean of the last 100 games")
        ax.axhline(18, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Pong score")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("a2c_atari.py on PongNoFrameskip-v4" + (f"\n{args.caption}" if args.caption else ""), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.figure), exist_ok=True)
    fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
