"""Memory benchmark: envs with their velocities hidden, the standard test for a recurrent PPO.

    python notes/memory_benchmark.py run --env cartpole --config recurrent --seed 1 --runs-dir runs-memory
    python notes/memory_benchmark.py table --runs-dir runs-memory
    python notes/memory_benchmark.py run --env cartpole --short      # a tenth of the steps, to try it in a minute

Each env here is a gymnasium env with its velocities zeroed in the observation (HideIndices): CartPoleNoVel-v1
(CartPole-v1 without indices 1 and 3), PendulumNoVel-v1 (Pendulum-v1 without index 2), AcrobotNoVel-v1,
LunarLanderNoVel-v3 (needs gymnasium[box2d]), HopperNoVel-v5 and HalfCheetahNoVel-v5. One observation then shows
where things are but not where they are going, so a policy without memory cannot act well. Each run trains with
ppo.py's defaults for the env and one of three configs (flags on top of the defaults):

    plain        no memory
    stack        --frame-stack 4
    recurrent    --recurrent        (with ppo.py's recurrent defaults: 4 minibatches of 32-step sequences, ...)

A run shows ppo.py's progress line as it trains and records the ppo.py commit it ran (commit.txt in its run
directory). `table` reads every run directory in --runs-dir (these, or ppo.py's own runs of the same envs with any
--exp-name, which it shows as the config), names the commits, lists a run that has not reached its steps as
unfinished, and prints per run the mean return of the last 100 training episodes, the best that running mean was
during the run, whether the run holds (ends within 10% of its best: at least 0.9 x best, or for a negative best
at least 1.1 x best), the first step at which it reached the env's goal where there is one, and the steps/s; then
the median per config over finished runs. `plot` draws the learning curves with notes/plot.py (needs matplotlib).
`starts --env pendulum` asks of each PendulumNoVel run whether its drop from its best window to its last was the
policy or the episodes' starting states (same_starts).
"""

import argparse
import contextlib
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
        "acrobot": ("AcrobotNoVel-v1", 500_000), "lunarlander": ("LunarLanderNoVel-v3", 1_000_000),
        "hopper": ("HopperNoVel-v5", 500_000), "halfcheetah": ("HalfCheetahNoVel-v5", 500_000)}
GOALS = {"CartPoleNoVel-v1": 475.0, "PendulumNoVel-v1": -300.0, "AcrobotNoVel-v1": -100.0,   # last-100 mean
         "CueDelay-v0": 0.95}
CONFIGS = {"plain": {}, "stack": dict(frame_stack=4), "recurrent": dict(recurrent=True)}


class HideIndices(gym.ObservationWrapper):
    """Zero the given observation indices: the agent sees positions, not velocities."""

    def __init__(self, env: gym.Env, indices: tuple[int, ...]):
        super().__init__(env)
        self.indices = list(indices)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32))

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
# Beyond classic control: the same cut on Box2D and MuJoCo. LunarLander-v3 shows (x, y, vx, vy, angle, angular
# velocity, two leg contacts); Hopper-v5 and HalfCheetah-v5 show joint positions, then joint velocities.
gym.register("LunarLanderNoVel-v3",
             entry_point=lambda **kwargs: HideIndices(gym.make("LunarLander-v3", **kwargs), (2, 3, 5)))
gym.register("HopperNoVel-v5", entry_point=lambda **kwargs: HideIndices(gym.make("Hopper-v5", **kwargs), range(5, 11)))
gym.register("HalfCheetahNoVel-v5",
             entry_point=lambda **kwargs: HideIndices(gym.make("HalfCheetah-v5", **kwargs), range(8, 17)))


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


def holds(end: float, best: float) -> bool:
    """The issue's no-collapse test: the run ends within 10% of the best running mean it reached."""
    return end >= (0.9 * best if best >= 0 else 1.1 * best)


def last_100_means(returns: np.ndarray) -> np.ndarray:
    """The mean of the last 100 episodes after each episode from the 100th on: entry i ends at episode 99 + i."""
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    return (cumulative[100:] - cumulative[:-100]) / 100


def run_summary(run_dir: Path) -> dict:
    """One run directory: env id, config (its --exp-name), seed, steps done and asked, and the returns' story."""
    env_id, config, seed = run_dir.name.split("__")[:3]
    episodes, updates = ([*csv.DictReader(open(run_dir / name))] if (run_dir / name).exists() else []
                         for name in ("episodes.csv", "updates.csv"))      # a run just started has neither yet
    for module in ("memory_benchmark_", "recurrent_lr_screen_"):                # --env-id module:EnvName
        env_id = env_id.removeprefix(module)
    args = json.loads((run_dir / "args.json").read_text())
    row = dict(env_id=env_id, config=config, seed=int(seed), target=args["total_timesteps"],
               steps=int(updates[-1]["global_step"]) if updates else 0)
    batch = args["num_envs"] * args["num_steps"]          # a run stops at the last whole iteration within its target
    row["unfinished"] = (f"unfinished: {row['steps']:,} of {row['target']:,}" if row["steps"] + batch <= row["target"]
                         else "fewer than 100 episodes" if len(episodes) < 100 else None)   # running, or stopped
    if row["unfinished"]:
        return row
    running = last_100_means(np.array([float(r["episodic_return"]) for r in episodes]))
    goal = GOALS.get(row["env_id"])
    reached = np.flatnonzero(running >= goal) if goal is not None else []
    row.update(end=running[-1], best=running.max(), best_step=int(episodes[99 + running.argmax()]["global_step"]),
               first=f"{int(episodes[99 + reached[0]]['global_step']):,}" if len(reached) else
               "not reached" if goal is not None else "-",
               sps=row["steps"] / float(updates[-1]["wall_time"]))
    row["holds"] = holds(row["end"], row["best"])
    return row


def table(runs_dir: str) -> None:
    dirs = sorted(Path(runs_dir).glob("*__*__*__*"))
    rows = sorted((run_summary(d) for d in dirs), key=lambda r: (r["env_id"], r["config"], r["seed"]))
    commits = sorted({(d / "commit.txt").read_text().strip() if (d / "commit.txt").exists() else "not recorded"
                      for d in dirs})
    print(f"ppo.py commit of the runs: {', '.join(commits) or 'no runs'}; now {commit()}\n")
    print("| env | config | seed | steps | last-100 mean at the end | best last-100 mean (step) | holds | "
          "goal first reached at step | steps/s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["unfinished"]:
            print(f"| {r['env_id']} | {r['config']} | {r['seed']} | {r['unfinished']} | | | | | |")
            continue
        print(f"| {r['env_id']} | {r['config']} | {r['seed']} | {r['steps']:,} | {r['end']:.1f} | {r['best']:.1f} "
              f"({r['best_step']:,}) | {'yes' if r['holds'] else 'no'} | {r['first']} | {r['sps']:,.0f} |")
    print("\n| env | config | seeds | last-100 mean at the end: median (each seed) | seeds that hold | median steps/s |"
          "\n|---|---|---|---|---|---|")
    done = [r for r in rows if not r["unfinished"]]
    for env_id, config in sorted({(r["env_id"], r["config"]) for r in done}):
        sel = [r for r in done if (r["env_id"], r["config"]) == (env_id, config)]
        each = ", ".join(f"{r['end']:.1f}" for r in sel)
        print(f"| {env_id} | {config} | {len(sel)} | {statistics.median(r['end'] for r in sel):.1f} ({each}) | "
              f"{sum(r['holds'] for r in sel)}/{len(sel)} | {statistics.median(r['sps'] for r in sel):,.0f} |")


def reset_to_start(env: gym.Env, seed: int, k: int):
    """Reset `env` to the state its k-th episode started from in training, as a vector env's sub-env seeded with
    `seed` drew it (its first reset seeded, every later one not), for an env whose steps draw no random numbers."""
    obs, info = env.reset(seed=seed)
    for _ in range(k):
        obs, info = env.reset()
    return obs, info


def same_starts(run_dir: Path, repeats: int = 3) -> dict:
    """Is a run's drop from its best last-100 mean to its last one the policy, or the episodes' starting states?

    Pendulum's return depends on where the pendulum starts (hanging down costs far more than near the top), and
    every episode lasts 200 steps, so episode k of sub-env i always starts from the k-th draw of that env's seeded
    generator (reset_to_start), whatever the policy. This replays those starts: the run's final policy, sampling
    its actions as in training, plays the 100 starts of the run's best window and the 100 of its last one
    (`repeats` times each). If the final policy scores about as much lower on the last window's
    starts as training did, the drop was the starts, not a worse policy."""
    import torch
    import ppo
    args = json.loads((run_dir / "args.json").read_text())
    episodes = list(csv.DictReader(open(run_dir / "episodes.csv")))
    n = args["num_envs"]
    if len({r["episodic_length"] for r in episodes}) != 1 or len(episodes) % n:
        raise SystemExit(f"error: {run_dir}: episodes of different lengths; the starts cannot be replayed")
    returns = np.array([float(r["episodic_return"]) for r in episodes])
    running = last_100_means(returns)
    windows = {"best": range(running.argmax(), running.argmax() + 100), "last": range(len(returns) - 100, len(returns))}
    policy = ppo.load_policy(run_dir / "checkpoint.pt", deterministic=False)
    torch.manual_seed(0)
    played = {name: [] for name in windows}
    with contextlib.closing(policy.make_env()) as env:
        for name, window in windows.items():
            for j in [j for j in window for _ in range(repeats)]:     # episode j: sub-env j % n's (j // n)-th
                obs, _ = reset_to_start(env, args["seed"] + j % n, j // n)
                policy.reset()
                total, done = 0.0, False
                while not done:
                    obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
                    total, done = total + float(reward), terminated or truncated
                played[name].append(total)
    return {name: (returns[list(window)].mean(), np.mean(played[name])) for name, window in windows.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["run", "table", "plot", "starts"])
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
    elif args.what == "starts":
        print("| run | best window: training, final policy on its starts | last window: training, final policy on its "
              "starts |\n|---|---|---|")
        for run_dir in sorted(Path(args.runs_dir).glob(f"*{ENVS[args.env][0]}__*__*__*")):
            (best, best_now), (last, last_now) = same_starts(run_dir).values()
            print(f"| {run_dir.name} | {best:.1f}, {best_now:.1f} | {last:.1f}, {last_now:.1f} |", flush=True)
    else:
        env_id = ENVS[args.env][0]
        runs = sorted(str(p) for p in Path(args.runs_dir).glob(f"*{env_id}__*"))   # also memory_benchmark_{env_id}
        return subprocess.call([sys.executable, str(HERE / "plot.py"), *runs, "--overlay", "--title",
                                f"{env_id}: no memory, --frame-stack 4, --recurrent",
                                *(["-o", args.out] if args.out else [])])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
