"""Learning curves from ppo.py run directories: return vs environment steps.

    python notes/plot.py runs/CartPole-v1__* -o cartpole.png

Runs of the same env and --exp-name (the first two parts of the directory name, `{env_id}__{exp_name}__...`) are
one curve: the mean over runs of each run's smoothed return (mean of its last --window episodes), with a band
from the lowest to the highest run. A curve ends where the shortest of its runs ends (a mean needs every run); the
legend and the output say so, and name that run, when its runs differ in length. Several groups give one panel
each, laid out in a grid of up to 3 columns; --overlay draws them on one axis instead (to compare settings, give
each its own --exp-name when training). Without -o the PNG goes beside the runs: learning_curve.png in the folder
that holds them. Needs matplotlib (pip install matplotlib), as notes/pictures.py does; ppo.py does not.
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
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="PNG file to write (default: learning_curve.png in the folder that holds the runs)")
    parser.add_argument("--window", type=int, default=100, help="episodes in the moving average (default 100)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--overlay", action="store_true",
                        help="draw every group on one axis (to compare settings) instead of one panel per group")
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
            problem = "matched no run directory" if "*" in str(run) else "no episodes.csv here"
            print(f"error: {run}: {problem}; give ppo.py run directories", file=sys.stderr)
            return 2

    groups = defaultdict(list)                          # (env id, exp name) -> run directories (seeds)
    for run in args.runs:
        groups[tuple((run.name.split("__") + [""])[:2])].append(run)
    one_exp = len({exp for _, exp in groups}) == 1      # then the env id alone names a curve
    groups = {env if one_exp else f"{env} [{exp}]": runs for (env, exp), runs in groups.items()}
    panels = 1 if args.overlay else len(groups)
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 if args.overlay else 5.5 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)                           # an incomplete last row
    for i, (name, runs) in enumerate(sorted(groups.items())):
        ax = axes.flat[0 if args.overlay else i]
        curves = [smoothed_curve(run, args.window) for run in runs]
        end = min(steps[-1] for steps, _ in curves)     # only where every run has data
        grid = np.linspace(max(steps[0] for steps, _ in curves), end, 200)
        ys = np.array([np.interp(grid, steps, values) for steps, values in curves])
        cut, longest = "", max(steps[-1] for steps, _ in curves)
        if end < longest:         # a curve that silently stops early would read as "training stopped there"
            shortest = min(zip(curves, runs), key=lambda cr: cr[0][0][-1])[1]
            cut = f", cut to the shortest: {end:,} steps"
            print(f"note: {name}: drawn to {end:,} steps, where the shortest of its {len(runs)} runs ends "
                  f"({shortest}; the longest reaches {longest:,}); plot that run apart to see the rest")
        n_runs = f"{len(runs)} run{'s' * (len(runs) > 1)}{cut}"
        label = f"{name} ({n_runs})" if args.overlay else f"mean of {n_runs}"
        line, = ax.plot(grid, ys.mean(0), label=label)
        if len(runs) > 1:
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.15 if args.overlay else 0.25, color=line.get_color(),
                            label=None if args.overlay else "min-max over runs")
        ax.set(title="" if args.overlay else name, xlabel="environment steps",
               ylabel=f"return (mean of last {args.window} episodes)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    if args.out is None:                                # beside the runs, not in whatever folder this ran from
        parents = {run.resolve().parent for run in args.runs}
        args.out = (parents.pop() if len(parents) == 1 else Path.cwd()) / "learning_curve.png"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
