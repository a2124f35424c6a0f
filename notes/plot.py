"""Learning curves from ppo.py run directories: return vs environment steps.

    python notes/plot.py runs/CartPole-v1__* -o cartpole.png

Runs of the same env and --exp-name (the first two parts of the directory name, `{env_id}__{exp_name}__...`) share
a panel. Within it, runs whose settings (their args.json) differ only in the seed, or in what does not change what
a run learns (NOT_SETTINGS: where it logs, how fast it runs), are one curve: the mean over runs of each run's
smoothed return (mean of its last --window episodes), with a band from the lowest to the highest run. Runs with
other settings (--frame-stack 4, --recurrent, another --total-timesteps) are curves of their own, labelled by the
flags in which they differ. A curve ends where the shortest of its runs ends (a mean needs every run); the legend
and the output say so, and name that run, when its runs differ in length. Several panels are laid out in a grid of
up to 3 columns; --overlay draws every curve on one axis instead. A directory that cannot be drawn (no args.json,
no finished episode yet) is skipped with a note. Without -o the PNG goes beside the runs: learning_curve.png in the
folder that holds them. Needs matplotlib (pip install matplotlib), as notes/pictures.py does; ppo.py does not.
"""

import argparse
import csv
import json
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

# args.json fields that do not change what a run learns, so runs that differ only in these are seeds of one
# experiment: where it is written and shown, how fast it runs (a GPU or --compile rounds differently, as a seed
# differs), what --evaluate does, and a preset's name (its values are in the fields it sets). exp_name is here
# because the directory's name, which a user may rename, gives the panel. total_timesteps is not: it sets the
# learning-rate schedule.
NOT_SETTINGS = {"seed", "exp_name", "runs_dir", "quiet", "tensorboard", "track", "wandb_project_name", "wandb_entity",
                "save_every", "capture_video", "resume", "evaluate", "eval_episodes", "eval_stochastic",
                "eval_video_episodes", "cuda", "compile", "torch_threads", "torch_deterministic", "async_envs",
                "preset"}


def read_run(run: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(args.json, global_step and return of every finished episode) of one run directory; ValueError saying what
    is missing when it cannot be drawn."""
    if not run.is_dir():
        raise ValueError("matched no run directory" if "*" in str(run) else "not a run directory")
    if not (run / "episodes.csv").is_file():
        raise ValueError("no episodes.csv")
    if not (run / "args.json").is_file():
        raise ValueError("no args.json, so its settings are unknown")
    with open(run / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError("no finished episode in episodes.csv yet")
    try:
        settings = json.loads((run / "args.json").read_text())
    except json.JSONDecodeError:
        settings = None
    if not isinstance(settings, dict):
        raise ValueError("args.json holds no settings, so they are unknown")
    steps = np.array([int(r["global_step"]) for r in rows])
    return settings, steps, np.array([float(r["episodic_return"]) for r in rows])


def smoothed(returns: np.ndarray, window: int) -> np.ndarray:
    """The mean return of the last `window` episodes at every finished episode."""
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    idx = np.arange(1, len(returns) + 1)
    start = np.maximum(idx - window, 0)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def flag(name: str, value) -> str:
    """A setting as the command line writes it: --frame-stack 4, --recurrent, --no-norm-obs, --hidden-sizes 64 64."""
    if isinstance(value, bool):
        return f"--{'' if value else 'no-'}{name.replace('_', '-')}"
    shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"--{name.replace('_', '-')} {shown}".rstrip()


def label_groups(groups: list[tuple[dict, list[Path]]]) -> list[tuple[str, list[Path]]]:
    """Runs grouped by settings, each group named by the flags in which the groups differ: in full for the most
    typical group (the one that most often has each flag's most common value), then for each other group only the
    flags in which it differs from that one. One group needs no name: ""."""
    if len(groups) == 1:
        return [("", groups[0][1])]
    keys = [k for k in dict.fromkeys(k for settings, _ in groups for k in settings)      # args.json's order
            if len({json.dumps(settings.get(k, "not recorded")) for settings, _ in groups}) > 1]
    value = [{k: settings.get(k, "not recorded") for k in keys} for settings, _ in groups]
    common = {k: Counter(json.dumps(v[k]) for v in value).most_common(1)[0][0] for k in keys}
    typical = max(range(len(groups)), key=lambda i: (sum(json.dumps(value[i][k]) == common[k] for k in keys),
                                                     len(groups[i][1]), -i))
    order = [typical] + [i for i in range(len(groups)) if i != typical]
    return [(" ".join(flag(k, value[i][k]) for k in keys if i == typical or value[i][k] != value[typical][k]),
             groups[i][1]) for i in order]


def group_runs(settings: dict[Path, dict]) -> dict[str, list[tuple[str, list[Path]]]]:
    """{panel name: [(label, runs)]}: a panel per env and --exp-name (the directory's name), a curve per setting."""
    learning = {run: {k: v for k, v in s.items() if k not in NOT_SETTINGS} for run, s in settings.items()}
    panels = defaultdict(lambda: defaultdict(list))      # (env id, exp name) -> settings -> run directories (seeds)
    for run in sorted(settings):
        panels[tuple((run.name.split("__") + [""])[:2])][json.dumps(learning[run], sort_keys=True)].append(run)
    one_exp = len({exp for _, exp in panels}) == 1      # then the env id alone names a panel
    return {env if one_exp else f"{env} [{exp}]": label_groups([(learning[runs[0]], runs) for runs in groups.values()])
            for (env, exp), groups in sorted(panels.items())}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holding episodes.csv)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="PNG file to write (default: learning_curve.png in the folder that holds the runs)")
    parser.add_argument("--window", type=int, default=100, help="episodes in the moving average (default 100)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--overlay", action="store_true",
                        help="draw every curve on one axis instead of one panel per env and --exp-name")
    args = parser.parse_args(argv)
    data = {}
    for run in dict.fromkeys(args.runs):                # a run given twice is still one run
        try:
            data[run] = read_run(run)
        except ValueError as e:             # one unfinished or stray folder in a glob should not stop the plot
            print(f"note: {run}: skipped, {e}", file=sys.stderr)
    if not data:
        print("error: nothing to plot; give ppo.py run directories", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: notes/plot.py needs matplotlib; pip install matplotlib", file=sys.stderr)
        return 2

    groups = group_runs({run: settings for run, (settings, _, _) in data.items()})
    panels = 1 if args.overlay else len(groups)
    cols = min(panels, 3)
    rows = -(-panels // cols)
    curves_per_axis = [sum(map(len, groups.values()))] if args.overlay else [len(c) for c in groups.values()]
    shared = max(curves_per_axis) > 1                   # an axis with several curves: fainter bands, legend below
    fig, axes = plt.subplots(rows, cols, figsize=(7 if args.overlay else 5.5 * cols, (5.5 if shared else 4) * rows),
                             squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)                           # an incomplete last row
    for i, (name, curves_of_panel) in enumerate(groups.items()):
        ax = axes.flat[0 if args.overlay else i]
        for setting, runs in curves_of_panel:
            curves = [(data[run][1], smoothed(data[run][2], args.window)) for run in runs]
            end = min(steps[-1] for steps, _ in curves)     # only where every run has data
            grid = np.linspace(max(steps[0] for steps, _ in curves), end, 200)
            ys = np.array([np.interp(grid, steps, values) for steps, values in curves])
            cut, longest = "", max(steps[-1] for steps, _ in curves)
            curve = f"{name} {setting}".rstrip()
            if end < longest:     # a curve that silently stops early would read as "training stopped there"
                shortest = min(zip(curves, runs), key=lambda cr: cr[0][0][-1])[1]
                cut = f", cut to the shortest: {end:,} steps"
                print(f"note: {curve}: drawn to {end:,} steps, where the shortest of its {len(runs)} runs ends "
                      f"({shortest}; the longest reaches {longest:,}); plot that run apart to see the rest")
            n_runs = f"{len(runs)} run{'s' * (len(runs) > 1)}{cut}"
            label = f"{curve} ({n_runs})" if args.overlay else f"{setting}: mean of {n_runs}".lstrip(": ")
            line, = ax.plot(grid, ys.mean(0), label=textwrap.fill(label, 70, break_on_hyphens=False))
            if len(runs) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.15 if shared else 0.25,
                                color=line.get_color(), label=None if shared else "min-max over runs")
        ax.set(title="" if args.overlay else name, xlabel="environment steps",
               ylabel=f"return (mean of last {args.window} episodes)")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:                     # names of settings are long: below the axis, off the curves
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8)
        else:
            ax.legend(loc="best", fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    if args.out is None:                                # beside the runs, not in whatever folder this ran from
        parents = {run.resolve().parent for run in data}
        args.out = (parents.pop() if len(parents) == 1 else Path.cwd()) / "learning_curve.png"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
