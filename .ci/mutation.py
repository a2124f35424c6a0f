"""Mutation testing of ppo.py's PPO core and its checks (issue 37): a separate command, not part of the README's test
command. Run from the repository root with a virtual environment that has requirements.txt, hypothesis and mutmut 3:

    python .ci/mutation.py                 # everything: mutmut's two groups, then the declared tables' mutants
    python .ci/mutation.py checks tables   # some of them; mutant names or globs ('ppo.x_compute_gae*') narrow mutmut
    python .ci/mutation.py --tests-from bd9484a   # the same with test_ppo.py as it was at a commit (a score before)

Two kinds of mutants:
  1. mutmut 3 (https://mutmut.readthedocs.io) mutates the bodies of the functions in GROUPS, in a copy of the repository
     in .mutation/ (git-ignored: mutmut's mutants/ folder, its cache and setup.cfg, which holds its configuration,
     live there, so nothing is added at the top of the repository). Every function outside them gets mutmut's
     "# pragma: no mutate block" in the copy (a comment; the lines keep their numbers). Each mutant runs only the
     tests among its group's (GROUPS) that call the function it mutates (mutmut's stats).
  2. mutmut mutates function bodies only, never module-level assignments, so the declared tables EVALUATE_FLAGS,
     RESUME_KEEPS, REQUIRES and LIMITS get their own mutants here (table_mutants: every entry dropped, every Args
     field added to EVALUATE_FLAGS and RESUME_KEEPS), each run against its table's tests in TABLE_TESTS.
A surviving mutant is either killed by a new test or argued equivalent in notes/mutation.md."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"

# Two groups, each mutmut run in a folder of its own (.mutation/core, .mutation/checks) with its own tests: the
# functions it mutates, and the tests a mutant may run (mutmut picks, among these, those its stats saw call the mutated
# function). The tests are the fast ones (each under a second or so) that check these functions; end-to-end tests
# that train (learning, time limits, checkpoints, signals, torchrun) stay out, so a mutant only they would kill is
# reported as surviving (they train with every core function: each would run for every surviving core mutant). The
# property-based test of the flags (200 command lines, ~15 s) stays out too: it would run for every surviving mutant
# of the checks (check_args is on every command line's path); the tests its oracle states are in bounds_are_as_doc..
GROUPS = dict(
    core=(["clipped_policy_loss", "value_loss", "ppo_loss", "compute_gae", "next_state_values", "RunningMeanStd",
           "RewardScaler", "collect_rollout", "critic_values", "Rollout", "ppo_update", "GRUCore", "MemoryStore",
           "replay", "minibatches", "LegalActions", "Categorical", "DiagonalGaussian",
           "kl_diagonal_gaussians"],
          ["compute_gae", "gae_extremes", "clipped_policy_loss", "value_loss", "masked_distribution",
           "update_applies_the_mask", "no_legal_action", "recompute_adv_also_revalues", "rollout_keeps_frames",
           "recurrent_first_update", "critic_values_are_what", "recurrent_checkpoints_from_before",
           "recompute_adv_bootstraps", "mlp_agent_keeps", "gru_core_restarts", "memory_store_gives",
           "one_step_rollout", "ppo_loss_is_the", "ppo_update_reports", "rollout_keeps_each", "running_mean_std_is",
           "reward_scaler_divides", "memory_peek_is", "collect_rollout_acts_under", "categorical_is_torchs",
           "categorical_samples_each", "diagonal_gaussian_is",
           "called_without_a_memory"]),
    checks=(["check_args", "check_limits_and_combinations", "evaluate", "run_evaluation", "Run._check_resumable"],
            ["bad_input_is_one_line", "one_past_its_largest_value", "minibatches_of_one", "cuda_without_a_gpu",
             "corrupt_or_foreign",
             "evaluate_a_checkpoint", "evaluation_prints_each_episode", "stochastic_evaluation", "evaluate_from_python",
             "memory_flags_are_checked", "evaluate_refuses_every_flag", "evaluate_hands_each_flag",
             "resume_refuses_to_change", "resume_refuses_what_made", "resume_past_its_target",
             "resume_takes_the_env_id",
             "paths_and_checkpoints", "acts_only_through_another", "bounds_are_as_documented",
             "error_message_the_docs_quote", "evaluate_plays_known", "every_mode_acts_with",
             "resume_trains_while", "masked_agent_asked", "every_flag_changes_something_in_evaluate",
             "pipe_closed_before", "layer_sizes_and_minibatch_counts",
             "refusals_under_torchrun", "limits_and_combinations_accept",
             "cuda_under_torchrun", "learning_rate_and_target_kl", "evaluate_acts_legally"]))

TABLE_TESTS = dict(                             # each table's mutants run the tests of what it declares
    EVALUATE_FLAGS=["evaluate_refuses_every_flag", "evaluate_hands_each_flag"],
    RESUME_KEEPS=["resume_refuses_to_change", "resume_refuses_what_made"],
    REQUIRES=["acts_only_through_another", "memory_flags_are_checked", "resume_refuses_to_change"],
    LIMITS=["one_past_its_largest_value"])


TABLE_TIMEOUT = 60     # seconds; a table mutant's tests take ~10 s here, unless the mutant lets a run train for real


def table_mutants(ppo) -> list[tuple[str, str, object]]:
    """(description, table, mutated value) for every entry of the declared tables dropped, and every Args field not
    in EVALUATE_FLAGS or RESUME_KEEPS added to it."""
    fields = [f.name for f in dataclasses.fields(ppo.Args)]
    out = [(f"EVALUATE_FLAGS without {f}", "EVALUATE_FLAGS", tuple(x for x in ppo.EVALUATE_FLAGS if x != f))
           for f in ppo.EVALUATE_FLAGS]
    out += [(f"EVALUATE_FLAGS with {f}", "EVALUATE_FLAGS", (*ppo.EVALUATE_FLAGS, f)) for f in fields
            if f not in ppo.EVALUATE_FLAGS]
    for table in ("RESUME_KEEPS", "REQUIRES", "LIMITS"):
        entries = getattr(ppo, table)
        out += [(f"{table} without {k}", table, {x: v for x, v in entries.items() if x != k}) for k in entries]
    out += [(f"RESUME_KEEPS with {f}", "RESUME_KEEPS", {**ppo.RESUME_KEEPS, f: "mutant"}) for f in fields
            if f not in ppo.RESUME_KEEPS and f not in ("resume", "evaluate")]
    return out


def run_tables(tests_ref: str | None = None) -> tuple[int, list[str]]:
    """Each table mutant in a forked child of one process that has imported torch and ppo once: the child sets the
    mutated table on the ppo module, then runs the table's TABLE_TESTS with pytest (-x: the first failure kills it)."""
    work = WORK / "tables"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("ppo.py", "test_ppo.py", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "notes", work / "notes")
    if tests_ref:
        (work / "test_ppo.py").write_text(subprocess.run(["git", "show", f"{tests_ref}:test_ppo.py"], cwd=ROOT,
                                                         check=True, capture_output=True, text=True).stdout)
    os.chdir(work)
    sys.path.insert(0, str(work))
    import ppo
    import pytest
    survivors, mutants = [], table_mutants(ppo)
    for i, (what, table, value) in enumerate(mutants):
        pid = os.fork()
        if pid == 0:                                             # the child: one mutant, then exit with pytest's code
            setattr(ppo, table, value)
            with open(os.devnull, "w") as quiet:
                os.dup2(quiet.fileno(), 1), os.dup2(quiet.fileno(), 2)
                code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "test_ppo.py", "-k",
                                    " or ".join(TABLE_TESTS[table])])
            os._exit(int(code))
        started = time.time()
        while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.time() - started < TABLE_TIMEOUT:
            time.sleep(0.2)
        if not done[0]:                          # a mutant that lets a test train in earnest: a timeout kills it
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        killed = done[1] != 0
        print(f"  table mutant {i + 1}/{len(mutants)} {'killed  ' if killed else 'SURVIVED'} {what}", flush=True)
        if not killed:
            survivors.append(what)
    os.chdir(ROOT)
    return len(mutants), survivors


# Left out of the checks' mutants, for time: the lines that hold only an error message's words (a line that starts
# with a string, and `raise UsageError(...)` lines, whose condition is on the line before). Their mutants ("XX" around
# a message, its case changed) change what a refusal says, not whether it refuses; the docs-quote test checks the
# wording of every message the docs show.
MESSAGE_LINES = [r'^\s*f?"', r"raise UsageError\("]


def prepare_copy(work: Path, scope: list[str], fast: list[str], tests_ref: str | None = None) -> None:
    """The repository's files in work/, with every function outside scope marked not to mutate."""
    work.mkdir(parents=True, exist_ok=True)
    for p in work.iterdir():
        if p.name not in ("mutants", "mutmut-stats.json"):               # mutmut's results: reused where unchanged
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name in ("test_ppo.py", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "notes", work / "notes")
    if tests_ref:                                  # the score of an earlier test_ppo.py against today's ppo.py
        (work / "test_ppo.py").write_text(subprocess.run(["git", "show", f"{tests_ref}:test_ppo.py"], cwd=ROOT,
                                                         check=True, capture_output=True, text=True).stdout)
    source = (ROOT / "ppo.py").read_text()
    lines = source.splitlines()
    tree = ast.parse(source)

    def skip(node, qualified: str) -> None:
        # The def's colon ends the first line, from the def on, whose code (without its comment) ends with ":".
        i = next((j for j in range(node.lineno - 1, node.body[0].lineno - 1)
                  if re.sub(r"#.*", "", lines[j]).rstrip().endswith(":")), None)
        if i is None:
            raise SystemExit(f"{qualified}: a one-line def; mark it by hand")
        lines[i] += "  # pragma: no mutate block"

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in scope:
            skip(node, node.name)
        elif isinstance(node, ast.ClassDef) and node.name not in scope:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and f"{node.name}.{item.name}" not in scope:
                    skip(item, f"{node.name}.{item.name}")
    (work / "ppo.py").write_text("\n".join(lines) + "\n")
    (work / "setup.cfg").write_text(
        "[mutmut]\nsource_paths = ppo.py\nalso_copy =\n    README.md\n    notes\n    requirements.txt\n"
        "pytest_add_cli_args_test_selection =\n    test_ppo.py\n    -k\n    " + " or ".join(fast) + "\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x\n"
        "process_isolation = forkserver\n"    # forked from a process that has run no test: torch is not fork-safe
        + ("do_not_mutate_patterns =\n" + "".join(f"    {p}\n" for p in MESSAGE_LINES)
           if "check_args" in scope else ""))


def main(argv: list[str]) -> int:
    """python .ci/mutation.py [core] [checks] [tables] [--tests-from REF] [mutant names or globs]"""
    t0 = time.time()
    tests_ref = argv[argv.index("--tests-from") + 1] if "--tests-from" in argv else None
    argv = [a for a in argv if a not in ("--tests-from", tests_ref)]
    parts = [a for a in argv if a in (*GROUPS, "tables")] or [*GROUPS, "tables"]
    names = [a for a in argv if a not in parts]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    for group in (g for g in GROUPS if g in parts):
        t1, work = time.time(), WORK / (group + (f"-tests-from-{tests_ref}" if tests_ref else ""))
        prepare_copy(work, *GROUPS[group], tests_ref)
        # As many mutants at once as the cores this process may use: under `taskset -c 1`, one, leaving core 0 free.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
        subprocess.run([*mutmut, "run", "--max-children", str(cores), *names], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        results = subprocess.run([*mutmut, "results"], cwd=work, env=env, capture_output=True, text=True).stdout
        subprocess.run([*mutmut, "export-cicd-stats"], cwd=work, env=env, check=True, capture_output=True)
        stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
        print(f"{group}: {stats} in {time.time() - t1:.0f} s; not killed (mutmut show NAME, in {work}):", flush=True)
        for line in results.splitlines():                        # each with its change: the line before and after
            name, _, status = line.strip().rpartition(": ")
            diff = subprocess.run([*mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True).stdout
            changed = [d[1:].strip() for d in diff.splitlines() if d[:1] in "-+" and d[:3] not in ("---", "+++")]
            print(f"  {name} ({status}):", *changed, sep="\n      ", flush=True)
    if "tables" in parts:
        t1 = time.time()
        total, survivors = run_tables(tests_ref)
        print(f"tables: {total - len(survivors)} of {total} mutants killed in {time.time() - t1:.0f} s; surviving:",
              *survivors or ["none"], sep="\n  ")
    print(f"total: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
