"""Memory benchmark: velocity-masked classic control, the standard test for a recurrent PPO.

    python notes/memory_benchmark.py run --env cartpole --config recurrent --seed 1 --runs-dir runs-memory
    python notes/memory_benchmark.py table --runs-dir runs-memory
    python notes/memory_benchmark.py run --env cartpole --short      # a tenth of the steps, to try it in a minute

CartPoleNoVel-v1 is CartPole-v1 with observation indices 1 and 3 (the velocities) zeroed; PendulumNoVel-v1 is
Pendulum-v1 with index 2 (the angular velocity) zeroed. One observation then shows where the pole is but not where
it is going, so a policy without memory cannot balance it. Each run trains with ppo.py's defaults for the env and
one of three configs (flags on top of the defaults):

    plain        no memory
    stack        --frame-stack 4
    recurrent    --recurrent --num-minibatches 4     (one setting for every such env: 4 must divide the number
                                                       of 32-step sequences, 16 * 64 / 32 or 8 * 256 / 32 here)

A run shows ppo.py's progress line as it trains and records the ppo.py commit it ran (commit.txt in its run
directory). `table` names those commits, lists a run that has not reached its steps as unfinished, and prints the
mean return of the last 100 training episodes per run, the first step at which that running mean reached the goal
(CartPoleNoVel 475, PendulumNoVel -300), the steps/s, and the mean per config over finished runs; `plot` draws the
learning curves with notes/plot.py (needs matplotlib).
"""

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ENVS = {"cartpole": ("CartPoleNoVel-v1", 200_000), "pendulum": ("PendulumNoVel-v1", 500_000),
        "acrobot": ("AcrobotNoVel-v1", 500_000)}
GOALS = {"CartPoleNoVel-v1": 475.0, "PendulumNoVel-v1": -300.0, "AcrobotNoVel-v1": -100.0}   # last-100 mean
ENVS_BY_ID = {env_id: steps for env_id, steps in ENVS.values()}
CONFIGS = {"plain": {}, "stack": dict(frame_stack=4), "recurrent": dict(recurrent=True, num_minibatches=4)}


class HideIndices(gym.ObservationWrapper):
    """Zero the given observation indices: the agent sees positions, not velocities."""

    def __init__(self, env: gym.Env, indices: tuple[int, ...]):
        super().__init__(env)
        self.indices = list(indices)

    def observation(self, obs):
        obs = np.array(obs, dtype=np.float32)
        obs[self.indices] = 0.0
        return obs


def cartpole_novel(**kwargs):
    return HideIndices(gym.make("CartPole-v1", **kwargs), (1, 3))


def pendulum_novel(**kwargs):
    return HideIndices(gym.make("Pendulum-v1", **kwargs), (2,))


gym.register("CartPoleNoVel-v1", entry_point=cartpole_novel)
gym.register("PendulumNoVel-v1", entry_point=pendulum_novel)
gym.register("AcrobotNoVel-v1", entry_point=lambda **kwargs: HideIndices(gym.make("Acrobot-v1", **kwargs), (4, 5)))


def commit() -> str:
    """The ppo.py commit a run used (with "+changes" when the working tree differs from it), for the table."""
    def git(*words):
        return subprocess.run(["git", *words], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--", "ppo.py") else "")


def run(env: str, config: str, seed: int, runs_dir: str, steps: int | None = None) -> None:
    """Train one run, ppo.py's progress line showing as it goes; steps: fewer than the env's budget (--short)."""
    import ppo
    env_id, budget = ENVS[env]
    args = ppo.default_args(env_id, seed=seed, total_timesteps=steps or budget, runs_dir=runs_dir, exp_name=config,
                            tensorboard=False, **CONFIGS[config])
    print(f"{env_id} {config} seed {seed}: {args.total_timesteps:,} steps, ppo.py at {commit()}", flush=True)
    result = ppo.train(args)
    (result["run_dir"] / "commit.txt").write_text(commit() + "\n")
    print(f"{env_id} {config} seed {seed}: last-100 mean {np.mean(result['episode_returns'][-100:]):.1f}; "
          f"{result['global_step'] / result['wall_time']:.0f} steps/s; {result['run_dir']}", flush=True)


def table(runs_dir: str) -> None:
    rows = []
    for run_dir in sorted(Path(runs_dir).glob("*__*__*__*")):
        env_id, config, seed = run_dir.name.split("__")[:3]
        episodes = list(csv.DictReader(open(run_dir / "episodes.csv")))
        updates = list(csv.DictReader(open(run_dir / "updates.csv")))
        target = json.loads((run_dir / "args.json").read_text())["total_timesteps"]
        done = int(updates[-1]["global_step"]) if updates else 0
        if done + 2048 < target or not episodes:                   # still running, or stopped early: say so
            rows.append((env_id, config, int(seed), float("nan"), 0.0, done, f"unfinished: {done:,} of {target:,}"))
            continue
        returns = np.array([float(r["episodic_return"]) for r in episodes])
        running = np.array([returns[max(0, i - 99):i + 1].mean() for i in range(len(returns))])
        reached = np.flatnonzero((running >= GOALS[env_id]) & (np.arange(len(returns)) >= 99))
        first = f"{int(episodes[reached[0]]['global_step']):,}" if len(reached) else "not reached"
        sps = int(updates[-1]["global_step"]) / float(updates[-1]["wall_time"])
        rows.append((env_id, config, int(seed), returns[-100:].mean(), sps, int(updates[-1]["global_step"]), first))
    commits = sorted({(d / "commit.txt").read_text().strip() if (d / "commit.txt").exists() else "not recorded"
                      for d in Path(runs_dir).glob("*__*__*__*")})
    print(f"ppo.py commit of the runs: {', '.join(commits) or 'no runs'}; now {commit()}\n")
    print("| env | config | seed | steps | last-100 mean return at the end | goal first reached at step | steps/s |\n"
          "|---|---|---|---|---|---|---|")
    for env_id, config, seed, last, sps, steps, first in sorted(rows):
        print(f"| {env_id} | {config} | {seed} | {steps:,} | {last:.1f} | {first} | {sps:,.0f} |")
    print("\n| env | config | seeds | mean of the seeds' last-100 means (each seed) | median steps/s |\n|---|---|---|---|---|")
    for env_id in sorted({r[0] for r in rows}):
        for config in CONFIGS:
            sel = [r for r in rows if r[0] == env_id and r[1] == config and not np.isnan(r[3])]   # finished
            if sel:
                each = ", ".join(f"{r[3]:.1f}" for r in sorted(sel, key=lambda r: r[2]))
                print(f"| {env_id} | {config} | {len(sel)} | {np.mean([r[3] for r in sel]):.1f} ({each}) | "
                      f"{statistics.median(r[4] for r in sel):,.0f} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["run", "table", "plot"])
    parser.add_argument("--env", choices=list(ENVS), default="cartpole")
    parser.add_argument("--config", choices=list(CONFIGS), default="recurrent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs-dir", default="runs-memory")
    parser.add_argument("-o", "--out", default=None, help="plot: the PNG to write")
    parser.add_argument("--short", action="store_true", help="run: a tenth of the env's steps, to try it quickly")
    args = parser.parse_args(argv)
    if args.what == "run":
        run(args.env, args.config, args.seed, args.runs_dir, ENVS[args.env][1] // 10 if args.short else None)
    elif args.what == "table":
        table(args.runs_dir)
    else:
        env_id = ENVS[args.env][0]
        runs = sorted(str(p) for p in Path(args.runs_dir).glob(f"{env_id}__*"))
        return subprocess.call([sys.executable, str(HERE / "plot.py"), *runs, "--overlay", "--title",
                                f"{env_id}: no memory, --frame-stack 4, --recurrent",
                                *(["-o", args.out] if args.out else [])])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
