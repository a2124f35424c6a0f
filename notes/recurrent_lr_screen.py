"""A small screen of the --recurrent policy's learning rate on memory tasks (notes/recurrent_screen.md, section 3).

    python notes/recurrent_lr_screen.py run --env cartpole --lr 1e-3 --seed 1 --runs-dir runs-lr
    python notes/recurrent_lr_screen.py table --runs-dir runs-lr

Each run: ppo.py's defaults for the env, --recurrent --num-minibatches 4 (notes/memory_benchmark.py's recurrent
config), and the learning rate under test (annealed to 0, as every default run). The envs:

    cartpole   CartPoleNoVel-v1 (memory_benchmark.py): velocities hidden, goal a last-100 mean of 475
    pendulum   PendulumNoVel-v1 (memory_benchmark.py): angular velocity hidden, goal -300
    cue        CueDelay-v0 (here): a cue (+1 or -1) in the first observation only, then 24 blank steps, and the
               action at the last step must name it (reward 1, else 0). --frame-stack 4 cannot reach back that
               far; guessing scores 0.5. Goal 0.95

`table` prints per run the last-100 mean return at the end, the step at which the running last-100 mean first
reached the goal, the median approximate KL and clip fraction over the run's updates, and per (env, lr) the seeds'
median and range. --num-minibatches N (other than 4) runs that setting too, named lrX-mbN.
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import memory_benchmark  # noqa: E402  (registers CartPoleNoVel-v1 and PendulumNoVel-v1)

DELAY = 24


class CueDelayEnv(gym.Env):
    """The cue of test_ppo.py's CueEnv, remembered for DELAY blank steps instead of 4."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return np.array([2.0 * self.cue - 1.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == DELAY + 1
        return np.zeros(2, np.float32), float(done and action == self.cue), done, False, {}


gym.register("CueDelay-v0", entry_point=CueDelayEnv)

ENVS = {"cartpole": ("CartPoleNoVel-v1", 200_000, 475.0), "pendulum": ("PendulumNoVel-v1", 500_000, -300.0),
        "cue": ("CueDelay-v0", 100_000, 0.95)}


def run(env: str, lr: float, seed: int, runs_dir: str, steps: int | None, minibatches: int = 4) -> None:
    import ppo
    env_id, default_steps, _ = ENVS[env]
    args = ppo.default_args(env_id, seed=seed, total_timesteps=steps or default_steps, runs_dir=runs_dir,
                            exp_name=f"lr{lr:g}" + (f"-mb{minibatches}" if minibatches != 4 else ""), quiet=True,
                            tensorboard=False, recurrent=True, num_minibatches=minibatches, learning_rate=lr)
    result = ppo.train(args)
    print(f"{env_id} lr {lr:g} seed {seed}: last-100 mean {np.mean(result['episode_returns'][-100:]):.2f}; "
          f"{result['run_dir']}", flush=True)


def table(runs_dir: str) -> None:
    goals = {env_id: goal for env_id, _, goal in ENVS.values()}
    rows = []
    for run_dir in sorted(Path(runs_dir).glob("*__lr*__*__*")):
        env_id, exp, seed = run_dir.name.split("__")[:3]
        if not (run_dir / "updates.csv").exists():
            continue
        episodes = list(csv.DictReader(open(run_dir / "episodes.csv")))
        updates = list(csv.DictReader(open(run_dir / "updates.csv")))
        planned = json.loads((run_dir / "args.json").read_text())
        if not updates or int(updates[-1]["global_step"]) + planned["num_envs"] * planned["num_steps"] <= \
                planned["total_timesteps"]:
            continue                                                # still running
        returns = np.array([float(r["episodic_return"]) for r in episodes])
        running = np.array([returns[max(0, i - 99):i + 1].mean() for i in range(len(returns))])
        reached = np.flatnonzero((running >= goals[env_id]) & (np.arange(len(returns)) >= 99))
        first = int(episodes[reached[0]]["global_step"]) if len(reached) else None
        kl = statistics.median(float(u["approx_kl"]) for u in updates)
        clip = statistics.median(float(u["clipfrac"]) for u in updates)
        sps = int(updates[-1]["global_step"]) / float(updates[-1]["wall_time"])
        rows.append((env_id, exp[2:].replace("-mb", " mb "), int(seed), int(updates[-1]["global_step"]),
                     returns[-100:].mean(), first, kl, clip, sps))
    print("| env | lr | seed | steps | last-100 mean at the end | goal first reached at step | median approx KL | "
          "median clip fraction | steps/s |\n|---|---|---|---|---|---|---|---|---|")
    for env_id, lr, seed, steps, last, first, kl, clip, sps in sorted(rows):
        print(f"| {env_id} | {lr} | {seed} | {steps:,} | {last:.2f} | {f'{first:,}' if first else 'not reached'} | "
              f"{kl:.4f} | {clip:.3f} | {sps:,.0f} |")
    print("\n| env | lr | seeds | last-100 mean at the end: median (range) | goal reached: seeds, median step | "
          "median approx KL (range) | median clip fraction (range) |\n|---|---|---|---|---|---|---|")
    for env_id, lr in sorted({(r[0], r[1]) for r in rows}):
        sel = [r for r in rows if r[0] == env_id and r[1] == lr]
        last, kls, clips = [r[4] for r in sel], [r[6] for r in sel], [r[7] for r in sel]
        firsts = [r[5] for r in sel if r[5] is not None]
        reached = f"{len(firsts)}/{len(sel)}" + (f", {statistics.median(firsts):,.0f}" if firsts else "")
        print(f"| {env_id} | {lr} | {len(sel)} | {statistics.median(last):.2f} ({min(last):.2f} to {max(last):.2f}) | "
              f"{reached} | {statistics.median(kls):.4f} ({min(kls):.4f}-{max(kls):.4f}) | "
              f"{statistics.median(clips):.3f} ({min(clips):.3f}-{max(clips):.3f}) |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("--env", choices=list(ENVS), default="cartpole")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="run: total steps (default: the env's budget above)")
    parser.add_argument("--num-minibatches", type=int, default=4, help="run: --num-minibatches (4 unless given)")
    parser.add_argument("--runs-dir", default="runs-lr")
    args = parser.parse_args(argv)
    if args.what == "run":
        run(args.env, args.lr, args.seed, args.runs_dir, args.steps, args.num_minibatches)
    else:
        table(args.runs_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
