"""Memory benchmark: envs with their velocities hidden, the standard test for a recurrent PPO.

    python notes/memory_benchmark.py run --env cartpole --config recurrent --seed 1 --runs-dir runs-memory
    python notes/memory_benchmark.py table --runs-dir runs-memory
    python notes/memory_benchmark.py run --env cartpole --short      # a tenth of the steps, to try it in a minute
    python notes/memory_benchmark.py run --env pendulum --seed 1 --snapshots 20 --runs-dir runs-memory
    python notes/memory_benchmark.py evals --runs-dir runs-memory    # score every snapshot on the same episodes

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
at least 1.1 x best), how much of its gain it kept (kept: (end - start) / (best - start), start being the mean of
its first 100 episodes; unlike end / best, the same whatever constant is added to the rewards), the first step at
which it reached the env's goal where there is one, and the steps/s; then the median per config over finished runs.

The best of a run's 1,000 or more overlapping 100-episode windows is partly luck: a policy that never changes still
has a best window above its last. `run --snapshots 20` keeps the agent about 20 times in the run (and at its end,
in snapshots/; the run is the same without them), and `evals` plays every snapshot on the same 30 evaluation
episodes (--episodes; the most likely action, starts no training episode had, as ppo.py --evaluate), so snapshots
differ only by their policies. It prints per run the agent it ended with, its best snapshot, random play on the
same episodes, and kept = (end - random) / (best - random); a run holds at 90% or more. Then per config: the
median of the agents it ended with, the chance that one of its runs ends above one without memory (every pair of
runs, not only those of the same seed: above_share), and the median of kept. A run without snapshots, such as one
ppo.py trained on its own, shows the agent it ended with alone (its checkpoint.pt). `evalplot -o F.png` draws
every run's scored snapshots, a panel per env, and `plot` the learning curves with notes/plot.py (both need
matplotlib).
`starts --env pendulum` asks of each PendulumNoVel run whether its drop from its best window to its last was the
policy or the episodes' starting states (same_starts).
"""

import argparse
import contextlib
import csv
import json
import math
import shutil
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


def run(env: str, config: str, seed: int, runs_dir: str, steps: int | None = None, snapshots: int = 0) -> None:
    """Train one run, ppo.py's progress line showing as it goes; steps: fewer than the env's budget (--short).
    snapshots: keep a copy of the agent about that many times in the run, evenly spaced, and at its end, in the run
    directory's snapshots/ (for `evals`). Checkpointing draws no random numbers: the run is the same without it."""
    import ppo
    env_id, budget = ENVS[env]
    args = ppo.default_args(env_id, seed=seed, total_timesteps=steps or budget, runs_dir=runs_dir, exp_name=config,
                            tensorboard=False, **CONFIGS[config])
    if snapshots:
        args.save_every = max(1, args.total_timesteps // (args.num_envs * args.num_steps) // snapshots)
    print(f"{env_id} {config} seed {seed}: {args.total_timesteps:,} steps, ppo.py at {commit()}", flush=True)
    with keep_snapshots(ppo) if snapshots else contextlib.nullcontext():
        result = ppo.train(args)
    (result["run_dir"] / "commit.txt").write_text(commit() + "\n")
    print(f"{env_id} {config} seed {seed}: last-100 mean {np.mean(result['episode_returns'][-100:]):.1f}; "
          f"{result['global_step'] / result['wall_time']:.0f} steps/s; {result['run_dir']}", flush=True)


@contextlib.contextmanager
def keep_snapshots(ppo):
    """While it lasts, every checkpoint ppo.py saves also leaves a copy beside it, snapshots/step-<global step>.pt."""
    save = ppo.Run.save

    def save_and_keep(run) -> None:
        save(run)
        (run.dir / "snapshots").mkdir(exist_ok=True)
        shutil.copyfile(run.checkpoint_path, run.dir / "snapshots" / f"step-{run.global_step:09d}.pt")
    ppo.Run.save = save_and_keep
    try:
        yield
    finally:
        ppo.Run.save = save


def holds(end: float, best: float) -> bool:
    """The no-collapse test (notes/recurrent_screen.md): the run ends within 10% of the best running mean it reached."""
    return end >= (0.9 * best if best >= 0 else 1.1 * best)


def last_100_means(returns: np.ndarray) -> np.ndarray:
    """The mean of the last 100 episodes after each episode from the 100th on: entry i ends at episode 99 + i."""
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    return (cumulative[100:] - cumulative[:-100]) / 100


def run_name(run_dir: Path) -> tuple[str, str, int]:
    """A run directory's env id (without the module of --env-id module:EnvName), config (its --exp-name) and seed."""
    env_id, config, seed = run_dir.name.split("__")[:3]
    for module in ("memory_benchmark_", "recurrent_lr_screen_"):
        env_id = env_id.removeprefix(module)
    return env_id, config, int(seed)


def run_summary(run_dir: Path) -> dict:
    """One run directory: env id, config (its --exp-name), seed, steps done and asked, and the returns' story."""
    env_id, config, seed = run_name(run_dir)
    episodes, updates = ([*csv.DictReader(open(run_dir / name))] if (run_dir / name).exists() else []
                         for name in ("episodes.csv", "updates.csv"))      # a run just started has neither yet
    args = json.loads((run_dir / "args.json").read_text())
    row = dict(env_id=env_id, config=config, seed=seed, target=args["total_timesteps"],
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
    row["kept"] = kept(row["end"], row["best"], running[0])     # of its gain over its first 100 episodes
    return row


def table(runs_dir: str) -> None:
    dirs = sorted(Path(runs_dir).glob("*__*__*__*"))
    rows = sorted((run_summary(d) for d in dirs), key=lambda r: (r["env_id"], r["config"], r["seed"]))
    commits = sorted({(d / "commit.txt").read_text().strip() if (d / "commit.txt").exists() else "not recorded"
                      for d in dirs})
    print(f"ppo.py commit of the runs: {', '.join(commits) or 'no runs'}; now {commit()}\n")
    print("| env | config | seed | steps | last-100 mean at the end | best last-100 mean (step) | holds | kept | "
          "goal first reached at step | steps/s |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["unfinished"]:
            print(f"| {r['env_id']} | {r['config']} | {r['seed']} | {r['unfinished']} | | | | | | |")
            continue
        print(f"| {r['env_id']} | {r['config']} | {r['seed']} | {r['steps']:,} | {r['end']:.1f} | {r['best']:.1f} "
              f"({r['best_step']:,}) | {'yes' if r['holds'] else 'no'} | {share(r['kept'])} | {r['first']} | "
              f"{r['sps']:,.0f} |")
    print("\n| env | config | seeds | last-100 mean at the end: median (each seed) | seeds that hold | seeds that kept "
          "90% | median steps/s |\n|---|---|---|---|---|---|---|")
    done = [r for r in rows if not r["unfinished"]]
    for env_id, config in sorted({(r["env_id"], r["config"]) for r in done}):
        sel = [r for r in done if (r["env_id"], r["config"]) == (env_id, config)]
        each = ", ".join(f"{r['end']:.1f}" for r in sel)
        print(f"| {env_id} | {config} | {len(sel)} | {statistics.median(r['end'] for r in sel):.1f} ({each}) | "
              f"{sum(r['holds'] for r in sel)}/{len(sel)} | {sum((r['kept'] or 0) >= 0.9 for r in sel)}/{len(sel)} | "
              f"{statistics.median(r['sps'] for r in sel):,.0f} |")


def play(path: Path, episodes: int) -> np.ndarray:
    """The return of a saved agent in each of `episodes` evaluation episodes, all played at once: episode k starts
    where ppo.evaluate's episode k with seed 0 does (a start no training episode had), and the agent takes its most likely
    action, so every snapshot of a run meets the same episodes and differs from another only by its policy."""
    import torch
    import ppo
    agent, args = ppo.load_agent(path)
    envs = [ppo.make_env(args.env_id, None, args.frame_stack) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=ppo.evaluation_seed(0, k))[0] for k, env in enumerate(envs)])
    memory = ppo.MemoryStore(1, episodes, agent.core)                  # every memory starts from 0
    returns, playing = np.zeros(episodes), np.ones(episodes, bool)
    while playing.any():
        with torch.inference_mode():
            actions = agent.act(torch.as_tensor(obs), None, True, memory.at_step(0))[0].numpy()
        memory.step(0, np.zeros(episodes))
        for k in np.flatnonzero(playing):                              # an ended episode is not stepped again
            obs[k], reward, terminated, truncated, _ = envs[k].step(actions[k])
            returns[k] += float(reward)
            playing[k] = not (terminated or truncated)
    return returns


def random_return(env_id: str, episodes: int) -> float:
    """The mean return of uniformly random actions in the same evaluation episodes: where `kept` counts from."""
    import ppo
    env, total = gym.make(env_id), 0.0
    env.action_space.seed(0)
    for k in range(episodes):
        env.reset(seed=ppo.evaluation_seed(0, k))
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
    return total / episodes


def kept(end: float, best: float, start: float) -> float | None:
    """The share of its best gain over `start` (a random policy, or the run's first 100 episodes) a run ends with:
    unlike end / best, it means the same whatever constant is added to every reward (Pendulum's are all below 0,
    LunarLander's cross it). None where the run never rose above its start."""
    return (end - start) / (best - start) if best > start else None


def share(kept: float | None) -> str:
    """A share as a whole percent, rounded down: 89.99% shows as 89%, so a run shown at 90% holds."""
    return "-" if kept is None else f"{math.floor(kept * 100 + 1e-9)}%"


def snapshot_returns(run_dir: Path, episodes: int) -> list[tuple[int, float]]:
    """(step, mean return over `episodes` evaluation episodes) of each snapshot the run kept (run --snapshots), in
    order, or of its checkpoint.pt alone for a run without snapshots; cached in the run's
    evaluations-<episodes>.csv, so a second call plays only new snapshots."""
    import torch
    cache = run_dir / f"evaluations-{episodes}.csv"
    done = {int(r["global_step"]): float(r["mean_return"]) for r in csv.DictReader(open(cache))} if cache.exists() \
        else {}
    paths = sorted((run_dir / "snapshots").glob("step-*.pt")) or [run_dir / "checkpoint.pt"]
    for path in paths:
        step = int(path.stem.removeprefix("step-")) if path.stem.startswith("step-") else \
            torch.load(path, weights_only=False)["global_step"]
        if step not in done:
            done[step] = float(play(path, episodes).mean())
            with open(cache, "w") as f:
                f.write("global_step,mean_return\n" + "".join(f"{k},{v}\n" for k, v in sorted(done.items())))
    return sorted(done.items())


def evals(runs_dir: str, episodes: int) -> None:
    """Per run: the agent it ended with, scored on `episodes` evaluation episodes, random play on the same ones, and
    for a run with snapshots its best snapshot and the share of the best's gain over random play it kept (holds:
    90% or more); then per config the median of each."""
    rows, floors = [], {}
    for run_dir in sorted(d for d in Path(runs_dir).glob("*__*__*__*") if (d / "checkpoint.pt").is_file()):
        env_id, config, seed = run_name(run_dir)
        curve = snapshot_returns(run_dir, episodes)
        if env_id not in floors:                       # as the run named it: module:EnvName imports the module
            floors[env_id] = random_return(json.loads((run_dir / "args.json").read_text())["env_id"], episodes)
        floor = floors[env_id]
        (best_step, best), end = max(curve, key=lambda c: c[1]), curve[-1][1]
        rows.append(dict(env_id=env_id, config=config, seed=seed, end=end, best=best, best_step=best_step,
                         kept=kept(end, best, floor) if len(curve) > 1 else None, floor=floor,
                         snapshots=len(curve)))
    rows.sort(key=lambda r: (r["env_id"], r["config"], r["seed"]))
    print(f"| env | config | seed | snapshots | the agent it ended with | its best snapshot (step) | random play | "
          f"kept | holds |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        best = f"{r['best']:.1f} ({r['best_step']:,})" if r["snapshots"] > 1 else "-"
        verdict = "-" if r["kept"] is None else "yes" if r["kept"] >= 0.9 else "no"   # "-": never above random
        print(f"| {r['env_id']} | {r['config']} | {r['seed']} | {r['snapshots']} | {r['end']:.1f} | {best} | "
              f"{r['floor']:.1f} | {share(r['kept'])} | {verdict} |")
    print(f"\n| env | config | seeds | the agent it ended with: median (each seed) | above no memory | kept: median | "
          f"seeds that hold |\n|---|---|---|---|---|---|---|")
    for env_id, config in sorted({(r["env_id"], r["config"]) for r in rows}):
        sel = [r for r in rows if (r["env_id"], r["config"]) == (env_id, config)]
        plain = [r["end"] for r in rows if (r["env_id"], r["config"]) == (env_id, "plain")]
        scored = [r for r in sel if r["snapshots"] > 1]
        shares = [r["kept"] for r in scored if r["kept"] is not None]     # a run never above random has none
        ends = ", ".join(f"{r['end']:.1f}" for r in sel)
        above = "-" if config == "plain" or not plain else share(above_share([r["end"] for r in sel], plain))
        print(f"| {env_id} | {config} | {len(sel)} | {statistics.median(r['end'] for r in sel):.1f} ({ends}) | "
              f"{above} | {share(statistics.median(shares)) if shares else '-'} | "
              f"{f'{sum(k >= 0.9 for k in shares)}/{len(scored)}' if scored else '-'} |")


def evals_plot(runs_dir: str, episodes: int, out: str) -> None:
    """Every run's snapshots as `evals` scored them (run evals first): a panel per env, a line per run, coloured by
    config, with random play's return dashed. Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: evalplot needs matplotlib; pip install matplotlib") from None
    curves, make_ids = {}, {}
    for scores in sorted(Path(runs_dir).glob(f"*__*__*__*/evaluations-{episodes}.csv")):
        env_id, config, _ = run_name(scores.parent)
        rows = list(csv.DictReader(open(scores)))
        if len(rows) > 1:
            curves.setdefault(env_id, []).append((config, [int(r["global_step"]) for r in rows],
                                                  [float(r["mean_return"]) for r in rows]))
            make_ids[env_id] = json.loads((scores.parent / "args.json").read_text())["env_id"]
    if not curves:
        raise SystemExit(f"error: {runs_dir}: no run with scored snapshots; run `evals --runs-dir {runs_dir}` first")
    configs = sorted({config for runs in curves.values() for config, *_ in runs})
    colours = dict(zip(configs, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    cols = min(3, len(curves))
    fig, axes = plt.subplots(-(-len(curves) // cols), cols, figsize=(5 * cols, 3.6 * -(-len(curves) // cols)),
                             squeeze=False)
    for ax, (env_id, runs) in zip(axes.flat, sorted(curves.items())):
        for config, steps, returns in runs:
            ax.plot(steps, returns, color=colours[config], alpha=0.8, lw=1.2)
        ax.axhline(random_return(make_ids[env_id], episodes), color="grey", ls="--", lw=1)
        ax.set_title(env_id, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"mean return, {episodes} evaluation episodes")
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.legend([plt.Line2D([], [], color=colours[c]) for c in configs] + [plt.Line2D([], [], color="grey", ls="--")],
               configs + ["random play"], loc="lower center", ncol=len(configs) + 1)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def above_share(these: list[float], others: list[float]) -> float:
    """The chance that a run of these ends above a run of the others, over every pair (a tie counts half): the
    probability of improvement (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"). Runs of
    two configurations with the same seed share no more than their envs' seeds (the networks differ, so their
    first weights do), so every pair counts, not only those of the same seed."""
    return float(np.mean([(a > b) + 0.5 * (a == b) for a in these for b in others]))


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
    parser.add_argument("what", choices=["run", "table", "evals", "evalplot", "plot", "starts"])
    parser.add_argument("--env", choices=list(ENVS), default="cartpole")
    parser.add_argument("--config", choices=list(CONFIGS), default="recurrent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs-dir", default="runs-memory")
    parser.add_argument("-o", "--out", default=None, help="plot, evalplot: the PNG to write")
    parser.add_argument("--short", action="store_true", help="run: a tenth of the env's steps, to try it quickly")
    parser.add_argument("--steps", type=int, default=None, help="run: this many steps instead of the env's budget")
    parser.add_argument("--snapshots", type=int, default=0, help="run: keep the agent about this many times (evals)")
    parser.add_argument("--episodes", type=int, default=30, help="evals: the evaluation episodes each snapshot plays")
    args = parser.parse_args(argv)
    if args.what == "run":
        run(args.env, args.config, args.seed, args.runs_dir,
            ENVS[args.env][1] // 10 if args.short else args.steps, args.snapshots)
    elif args.what == "table":
        table(args.runs_dir)
    elif args.what == "evals":
        evals(args.runs_dir, args.episodes)
    elif args.what == "evalplot":
        evals_plot(args.runs_dir, args.episodes, args.out or "evaluations.png")
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
