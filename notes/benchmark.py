"""Speed and memory of ppo.py beside CleanRL and Stable-Baselines3, measured side by side on this machine.

    python notes/benchmark.py --cleanrl-dir ~/cleanrl/cleanrl --cleanrl-python ~/venvs/cleanrl/bin/python \
        --sb3-python ~/venvs/sb3/bin/python --out /tmp/bench.md

Every command runs pinned to one core (taskset -c CORE, OMP_NUM_THREADS=1), one at a time, and the
implementations are alternated within each repetition so that machine noise hits them alike. Tables (markdown):

  1. CleanRL's settings on CartPole-v1, 200k steps: whole-process wall time, steps/s and peak RSS for ppo.py,
     CleanRL ppo.py and SB3 PPO.
  2. ppo.py's defaults: CartPole-v1 time and steps to solve (mean of the last 100 episodes >= 475), 5 seeds;
     Acrobot-v1 at 500k steps with the defaults and with CleanRL's settings, 3 seeds.
  3. HalfCheetah-v4 with the continuous defaults, 100k steps: ppo.py vs CleanRL ppo_continuous_action.py.
  4. Steps/s against --num-envs 1, 4, 16, 64 with sync and async envs, CartPole-v1 and HalfCheetah-v4.
  5. Where the time goes: each stage of one run (env step, policy forward, normalization, critic values, GAE,
     update, rest), timed by wrapping ppo.py's functions.
  6. torchrun: one agent trained by 1 process and by 2 (`torchrun --nproc-per-node 2`), alternated run by run on
     the cores given by --torchrun-cores: steps/s and CartPole solve step with the defaults (and two variants of
     the 2-process run), 3 seeds, and steps/s on HalfCheetah-v5 with the continuous defaults, 100k steps. The
     machine's load average is reported beside.

CleanRL (its cleanrl/ folder) and SB3 are not part of this project: point the flags at your own copies. CleanRL
pins gymnasium 0.29.1, so give it its own virtual environment. --skip-* flags leave parts out. Nothing here runs
in the test suite: a full run takes about 30 minutes.
"""

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PPO = HERE.parent / "ppo.py"
CLEANRL_SETTINGS = ["--num-envs", "4", "--num-steps", "128", "--update-epochs", "4", "--num-minibatches", "4",
                    "--learning-rate", "2.5e-4", "--ent-coef", "0.01", "--clip-vloss", "--no-norm-obs",
                    "--no-norm-reward"]


def timed(cmd: list[str], core: int, cwd: Path | None = None) -> dict:
    """Run `cmd` on one core; return wall seconds, peak RSS (MB) and its stdout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    full = ["/usr/bin/time", "-f", "TIME %e %M", "taskset", "-c", str(core), *cmd]
    out = subprocess.run(full, capture_output=True, text=True, cwd=cwd, env=env)
    match = re.search(r"TIME ([\d.]+) (\d+)", out.stderr)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return dict(wall=float(match.group(1)), rss=int(match.group(2)) / 1024, stdout=out.stdout)


def run_dir_of(stdout: str) -> Path:
    return Path(re.search(r"run directory: (\S+)", stdout).group(1))


def episodes(run_dir: Path) -> list[dict]:
    with open(run_dir / "episodes.csv", newline="") as f:
        return list(csv.DictReader(f))


def updates(run_dir: Path) -> list[dict]:
    with open(run_dir / "updates.csv", newline="") as f:
        return list(csv.DictReader(f))


def solved_at(rows: list[dict], threshold: float = 475.0):
    """(global_step, wall_time) of the first episode at which the mean of the last 100 reaches the threshold."""
    returns = [float(r["episodic_return"]) for r in rows]
    for i in range(100, len(returns) + 1):
        if sum(returns[i - 100:i]) / 100 >= threshold:
            return int(rows[i - 1]["global_step"]), float(rows[i - 1]["wall_time"])
    return None


def summary(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def ours(flags: list[str], runs: Path) -> list[str]:
    return [sys.executable, str(PPO), *flags, "--runs-dir", str(runs), "--quiet"]


def stage_profile(argv: list[str]) -> None:
    """In this process: train with ppo.py's stages wrapped in timers; print microseconds per env step for each."""
    sys.path.insert(0, str(PPO.parent))
    import time
    import ppo
    import tyro
    spent = dict.fromkeys(["env step", "policy forward + sampling", "observation normalization", "critic values", "GAE",
                           "update"], 0.0)

    def timed_method(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[key] += time.perf_counter() - start
        setattr(owner, name, wrapper)

    timed_method(ppo, "ppo_update", "update")
    timed_method(ppo, "compute_gae", "GAE")
    if hasattr(ppo, "critic_values"):       # V(s_t) of the whole rollout in one batch (also under --recompute-adv)
        timed_method(ppo, "critic_values", "critic values")
    timed_method(ppo.Agent, "act", "policy forward + sampling")
    timed_method(ppo.Agent, "normalize", "observation normalization")
    make_vector_env = ppo.make_vector_env

    def make_timed_vector_env(*a, **k):
        envs = make_vector_env(*a, **k)
        timed_method(envs, "step", "env step")
        return envs
    ppo.make_vector_env = make_timed_vector_env
    env_id = argv[argv.index("--env-id") + 1]
    args = tyro.cli(ppo.Args, args=argv, default=ppo.default_args(env_id))
    result = ppo.train(args)
    steps, wall = result["global_step"], result["wall_time"]
    spent["rest (buffers, bookkeeping, logging)"] = wall - sum(spent.values())
    print(json.dumps({"steps_per_s": steps / wall, **{k: v / steps * 1e6 for k, v in spent.items()}}))


def main() -> None:
    if sys.argv[1:2] == ["--stage-profile"]:
        return stage_profile(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cleanrl-dir", type=Path, help="folder holding CleanRL's ppo.py and ppo_continuous_action.py")
    parser.add_argument("--cleanrl-python", default="python", help="python of CleanRL's virtual environment")
    parser.add_argument("--sb3-python", default=None, help="python with stable-baselines3 installed (table 1)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side-by-side timing")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin every run to")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    parser.add_argument("--torchrun-cores", default=f"0-{os.cpu_count() - 1}",
                        help="cores for part 6, where 1- and 2-process runs share them (taskset -c syntax)")
    for part in ("table1", "table2", "table3", "scaling", "profile", "torchrun"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    args = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="ppo-bench-"))
    report = [f"Machine: {os.cpu_count()} cores, one core per run (taskset -c {args.core}); runs in {runs}."]

    def emit(title: str, text: str) -> None:
        report.append(f"\n### {title}\n\n{text}")
        print(report[-1], flush=True)

    # 1. CleanRL's settings, CartPole-v1, 200k steps.
    if not args.skip_table1:
        results = {"ppo.py": [], "CleanRL ppo.py": [], "SB3 PPO": []}
        for rep in range(args.reps):
            r = timed(ours(["--env-id", "CartPole-v1", "--total-timesteps", "200000", "--seed", str(rep + 1),
                            *CLEANRL_SETTINGS], runs), args.core)
            results["ppo.py"].append(dict(r, steps=int(updates(run_dir_of(r["stdout"]))[-1]["global_step"])))
            if args.cleanrl_dir:
                r = timed([args.cleanrl_python, "ppo.py", "--env-id", "CartPole-v1", "--total-timesteps", "200000",
                           "--seed", str(rep + 1), "--no-cuda"], args.core, cwd=args.cleanrl_dir)
                results["CleanRL ppo.py"].append(dict(r, steps=199_680))
            if args.sb3_python:
                r = timed([args.sb3_python, str(HERE / "sb3_ppo.py"), "--seed", str(rep + 1),
                           "--total-timesteps", "200000"], args.core)
                results["SB3 PPO"].append(dict(r, steps=json.loads(r["stdout"].strip().splitlines()[-1])["timesteps"]))
        base = statistics.median(x["wall"] for x in results["ppo.py"])
        rows = [[name, len(rs), summary([x["wall"] for x in rs]), summary([x["steps"] / x["wall"] for x in rs], "{:,.0f}"),
                 summary([x["rss"] for x in rs], "{:.0f}"), f"{statistics.median(x['wall'] for x in rs) / base:.2f}×"]
                for name, rs in results.items() if rs]
        emit("1. CleanRL's settings, CartPole-v1, 200k steps (whole process)",
             table(["implementation", "runs", "wall s", "steps/s (whole process)", "peak RSS MB", "time vs ppo.py"],
                   rows))

    # 2. ppo.py's defaults: CartPole time to solve; Acrobot must not get worse.
    if not args.skip_table2:
        rows = []
        for seed in range(1, 6):
            r = timed(ours(["--env-id", "CartPole-v1", "--seed", str(seed)], runs), args.core)
            rows.append([seed, *(solved_at(episodes(run_dir_of(r["stdout"]))) or ("not solved", ""))])
        solved = [r for r in rows if r[1] != "not solved"]
        rows.append(["median (range)", summary([r[1] for r in solved], "{:,.0f}"), summary([r[2] for r in solved], "{:.2f}")])
        emit("2a. ppo.py defaults, CartPole-v1: first step and second of training where the last-100 mean ≥ 475",
             table(["seed", "step", "training wall s"], rows))
        acro = {"defaults": [], "CleanRL's settings": []}
        for seed in (1, 2, 3):
            for name, flags in (("defaults", []), ("CleanRL's settings", CLEANRL_SETTINGS)):
                r = timed(ours(["--env-id", "Acrobot-v1", "--seed", str(seed), *flags], runs), args.core)
                returns = [float(e["episodic_return"]) for e in episodes(run_dir_of(r["stdout"]))]
                acro[name].append((sum(returns[-100:]) / 100, r["wall"]))
        emit("2b. Acrobot-v1, 500k steps, mean of the last 100 episodes (3 seeds)",
             table(["settings", "return", "wall s"], [[k, summary([x[0] for x in v]), summary([x[1] for x in v])]
                                                      for k, v in acro.items()]))

    # 3. HalfCheetah-v4, continuous defaults, 100k steps.
    if not args.skip_table3:
        results = {"ppo.py": [], "ppo.py --compile": [], "CleanRL ppo_continuous_action.py": []}
        for rep in range(args.reps):
            for name, extra in (("ppo.py", []), ("ppo.py --compile", ["--compile"])):
                r = timed(ours(["--env-id", "HalfCheetah-v4", "--total-timesteps", "100000", "--seed", str(rep + 1),
                                *extra], runs), args.core)
                results[name].append(dict(r, steps=int(updates(run_dir_of(r["stdout"]))[-1]["global_step"])))
            if args.cleanrl_dir:
                r = timed([args.cleanrl_python, "ppo_continuous_action.py", "--env-id", "HalfCheetah-v4",
                           "--total-timesteps", "100000", "--seed", str(rep + 1), "--no-cuda"], args.core,
                          cwd=args.cleanrl_dir)
                results["CleanRL ppo_continuous_action.py"].append(dict(r, steps=98_304))
        base = statistics.median(x["steps"] / x["wall"] for x in results["CleanRL ppo_continuous_action.py"]) \
            if results["CleanRL ppo_continuous_action.py"] else None
        rows = [[name, len(rs), summary([x["wall"] for x in rs]), summary([x["steps"] / x["wall"] for x in rs], "{:,.0f}"),
                 summary([x["rss"] for x in rs], "{:.0f}"),
                 f"{statistics.median(x['steps'] / x['wall'] for x in rs) / base:.2f}×" if base else ""]
                for name, rs in results.items() if rs]
        emit("3. HalfCheetah-v4, continuous defaults, 100k steps (whole process)",
             table(["implementation", "runs", "wall s", "steps/s (whole process)", "peak RSS MB", "vs CleanRL"], rows))

    # 4. Scaling with the number of envs.
    if not args.skip_scaling:
        rows = []
        for env_id, steps_per_env in (("CartPole-v1", 64), ("HalfCheetah-v4", 256)):
            for n in (1, 4, 16, 64):
                cells = []
                for mode in ("--no-async-envs", "--async-envs"):
                    total = max(4 * n * steps_per_env, 16_384)
                    flags = ["--env-id", env_id, "--num-envs", str(n), "--num-steps", str(steps_per_env),
                             "--num-minibatches", "4", "--total-timesteps", str(total), mode]
                    r = timed(ours(flags, runs), args.core)
                    ups = updates(run_dir_of(r["stdout"]))
                    cells.append(f"{int(ups[-1]['SPS']):,}")
                rows.append([env_id, n, steps_per_env, *cells])
        emit("4. Training steps/s (updates.csv SPS) against --num-envs; one core; 4 minibatches per epoch",
             table(["env", "num-envs", "num-steps", "sync", "async"], rows))

    # 5. Where the time goes: microseconds per env step in each stage of one run.
    if not args.skip_profile:
        columns = []
        for name, flags in (("CartPole-v1, CleanRL's settings", ["--env-id", "CartPole-v1", "--total-timesteps",
                                                                 "102400", *CLEANRL_SETTINGS]),
                            ("HalfCheetah-v4, continuous defaults", ["--env-id", "HalfCheetah-v4",
                                                                     "--total-timesteps", "32768"])):
            r = timed([sys.executable, __file__, "--stage-profile", *flags, "--runs-dir", str(runs), "--quiet",
                       "--no-tensorboard"], args.core)
            columns.append((name, json.loads(r["stdout"].strip().splitlines()[-1])))
        stages = [k for k in columns[0][1] if k != "steps_per_s"] + ["steps_per_s"]
        rows = [[k.replace("steps_per_s", "**steps/s**"),
                 *(f"{c[k]:,.0f}" if k == "steps_per_s" else f"{c[k]:.0f} µs ({100 * c[k] * c['steps_per_s'] / 1e6:.0f}%)"
                   for _, c in columns)] for k in stages]
        emit("5. Where the time goes: µs per environment step in each stage",
             table(["stage", *(name for name, _ in columns)], rows))

    # 6. torchrun: 1 process against 2, alternated run by run, on the same cores.
    if not args.skip_torchrun:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(PPO)]
        # --num-envs 8: the batch and minibatches of one process; --num-minibatches 8: its gradient steps per env step
        settings = {"1 process": ([sys.executable, str(PPO)], []), "2 processes": (torchrun, []),
                    "2 processes, --num-envs 8": (torchrun, ["--num-envs", "8"]),
                    "2 processes, --num-minibatches 8": (torchrun, ["--num-minibatches", "8"])}

        def measure(launcher, flags):
            load = os.getloadavg()[0]
            r = timed([*launcher, *flags, "--runs-dir", str(runs), "--quiet"], args.torchrun_cores)
            run_dir = run_dir_of(r["stdout"])
            last = updates(run_dir)[-1]
            return dict(r, load=load, sps=int(last["global_step"]) / float(last["wall_time"]),
                        solved=solved_at(episodes(run_dir)),
                        last100=statistics.mean(float(e["episodic_return"]) for e in episodes(run_dir)[-100:]))

        cartpole = {name: [] for name in settings}
        for seed in range(1, args.reps + 1):
            for name, (launcher, extra) in settings.items():
                cartpole[name].append(measure(launcher, ["--env-id", "CartPole-v1", "--seed", str(seed), *extra]))
        base = statistics.median(x["sps"] for x in cartpole["1 process"])
        rows = [[name, len(rs), summary([x["sps"] for x in rs], "{:,.0f}"),
                 f"{statistics.median(x['sps'] for x in rs) / base:.2f}×", summary([x["wall"] for x in rs]),
                 summary([x["solved"][0] for x in rs if x["solved"]], "{:,.0f}"),
                 summary([x["solved"][1] for x in rs if x["solved"]], "{:.2f}"),
                 f"{sum(1 for x in rs if x['solved'])}/{len(rs)}", summary([x["last100"] for x in rs]),
                 summary([x["load"] for x in rs])] for name, rs in cartpole.items()]
        emit("6a. CartPole-v1, defaults, 500k steps: 1 process against 2 (torchrun), seeds 1.."
             f"{args.reps}, cores {args.torchrun_cores}",
             table(["setting", "runs", "training steps/s", "vs 1 process", "whole-process wall s", "solve step",
                    "solve training s", "solved", "last-100 return", "load average at start"], rows))
        cheetah = {name: [] for name in list(settings)[:2]}
        for seed in range(1, args.reps + 1):
            for name in cheetah:
                launcher, extra = settings[name]
                cheetah[name].append(measure(launcher, ["--env-id", "HalfCheetah-v5", "--total-timesteps", "100000",
                                                        "--seed", str(seed), *extra]))
        base = statistics.median(x["sps"] for x in cheetah["1 process"])
        rows = [[name, len(rs), summary([x["sps"] for x in rs], "{:,.0f}"),
                 f"{statistics.median(x['sps'] for x in rs) / base:.2f}×", summary([x["wall"] for x in rs]),
                 summary([x["load"] for x in rs])] for name, rs in cheetah.items()]
        emit(f"6b. HalfCheetah-v5, continuous defaults, 100k steps: 1 process against 2 (torchrun), "
             f"cores {args.torchrun_cores}",
             table(["setting", "runs", "training steps/s", "vs 1 process", "whole-process wall s",
                    "load average at start"], rows))

    if args.out:
        args.out.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
