"""Learning curves from ppo.py run directories: return vs environment steps.

    python notes/plot.py runs/CartPole-v1__ppo__1__* runs/CartPole-v1__ppo__2__* -o cartpole.png

Runs of the same env (the part of the directory name before the first "__") are one curve: the mean over runs
of each run's smoothed return (mean of its last --window episodes), with a band from the lowest to the highest
run. Several envs give one panel each. Needs matplotlib (pip install matplotlib); nothing else in the project does.
"""

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def smoothed_curve(run_dir: Path, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(global_step, mean return of the last `window` episodes) at every finished episode of one run."""
    with open(run_dir / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {run_dir / 'episodes.csv'}: no finished episodes to plot yet")
    steps = np.array([int(r["global_step"]) for r in rows])
    returns = np.array([float(r["episodic_return"]) for r in rows])
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    idx = np.arange(1, len(returns) + 1)
    start = np.maximum(idx - window, 0)
    return steps, (cumulative[idx] - cumulative[start]) / (idx - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holding episodes.csv)")
    parser.add_argument("-o", "--out", type=Path, default=Path("learning_curve.png"), help="PNG file to write")
    parser.add_argument("--window", type=int, default=100, help="episodes in the moving average (default 100)")
    parser.add_argument("--title", default=None, help="figure title")
    args = parser.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: notes/plot.py needs matplotlib; pip install matplotlib", file=sys.stderr)
        return 2
    for run in args.runs:
        if not (run / "episodes.csv").is_file():
            print(f"error: {run}: no episodes.csv here; give ppo.py run directories", file=sys.stderr)
            return 2

    groups = defaultdict(list)                          # env id -> run directories (seeds)
    for run in args.runs:
        groups[run.name.split("__")[0]].append(run)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (env, runs) in zip(axes[0], sorted(groups.items())):
        curves = [smoothed_curve(run, args.window) for run in runs]
        end = min(steps[-1] for steps, _ in curves)     # only where every run has data
        grid = np.linspace(max(steps[0] for steps, _ in curves), end, 200)
        ys = np.array([np.interp(grid, steps, values) for steps, values in curves])
        ax.plot(grid, ys.mean(0), label=f"mean of {len(runs)} run{'s' * (len(runs) > 1)}")
        if len(runs) > 1:
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.25, label="min-max over runs")
        ax.set(title=env, xlabel="environment steps", ylabel=f"return (mean of last {args.window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
