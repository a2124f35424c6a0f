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
     RESUME_KEEPS, REQUIRES and LIMITS get their own mutants here (TABLE_MUTANTS: an entry dropped, one added, a
     LIMITS: an entry dropped), each run against the tests in TABLE_TESTS.
A surviving mutant is either killed by a new test or argued equivalent in notes/mutation.md."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"

# Two groups, each mutmut run in a folder of its own (.mutation/core, .mutation/checks) with its own tests: the functions
# it mutates, and the tests a mutant may run (mutmut picks, among these, those its stats saw call the mutated
# function). The tests are the fast ones (each a few seconds at most) that check these functions; slow end-to-end
# tests (learning, signals, torchrun) stay out, so a mutant only they would kill is reported as surviving. The
# property-based test of the flags (200 command lines, ~15 s) stays out too: it would run for every surviving mutant
# of the checks (check_args is on every command line's path); the tests its oracle states are in bounds_are_as_doc..
GROUPS = dict(
    core=(["clipped_policy_loss", "value_loss", "ppo_loss", "compute_gae", "next_state_values", "RunningMeanStd",
           "RewardScaler", "collect_rollout", "Rollout", "ppo_update", "GRUCore", "MemoryStore", "replay",
           "minibatches", "LegalActions"],
          ["compute_gae", "gae_extremes", "clipped_policy_loss", "value_loss", "masked_distribution",
           "update_applies_the_mask", "masked_agent_never", "no_legal_action", "time_limit_truncation",
           "recompute_adv_also_revalues", "rollout_keeps_frames", "recurrent_first_update",
           "recurrent_recompute_adv", "recurrent_checkpoints_from_before", "same_seed_gives_identical",
           "recompute_adv_bootstraps", "learning_rate_decays", "box_actions_end_to_end", "dict_and_tuple",
           "mlp_agent_keeps", "recurrent_checkpoint_resume", "mutation_"]),
    checks=(["check_args", "check_limits_and_combinations", "evaluate", "run_evaluation", "Run._check_resumable"],
            ["bad_input_is_one_line", "minibatches_of_one", "cuda_without_a_gpu", "corrupt_or_foreign",
             "evaluate_a_checkpoint", "evaluation_prints_each_episode", "stochastic_evaluation", "evaluate_from_python",
             "memory_flags_are_checked", "evaluate_refuses_every_flag", "evaluate_hands_each_flag",
             "resume_refuses_to_change", "resume_refuses_what_made", "resume_past_its_target",
             "paths_and_checkpoints", "acts_only_through_another", "bounds_are_as_documented",
             "error_message_the_docs_quote", "mutation_"]))

TABLE_TESTS = ["evaluate_refuses_every_flag", "resume_refuses_to_change", "acts_only_through_another",
               "evaluate_hands_each_flag", "resume_refuses_what_made", "memory_flags_are_checked",
               "numeric_and_string_flags"]


def table_mutants(source: str) -> list[tuple[str, str]]:
    """(description, mutated source) for every entry of the declared tables: dropped, and for the flag lists, every
    Args field not in them added."""
    tree = ast.parse(source)
    tables = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.targets[0], ast.Name) and n.targets[0].id in ("EVALUATE_FLAGS", "RESUME_KEEPS",
                                                                              "REQUIRES", "LIMITS")}
    fields = re.findall(r"^    (\w+): ", source[source.index("class Args:"):source.index("def batch_size")], re.M)
    lines = source.splitlines(keepends=True)
    start = {name: sum(map(len, lines[:node.lineno - 1])) + node.col_offset for name, node in tables.items()}
    end = {name: sum(map(len, lines[:node.end_lineno - 1])) + node.end_col_offset for name, node in tables.items()}

    def replace(name: str, new: str) -> str:
        return source[:start[name]] + new + source[end[name]:]

    out = []
    flags = ast.literal_eval(tables["EVALUATE_FLAGS"])
    for f in flags:
        out.append((f"EVALUATE_FLAGS without {f}", replace("EVALUATE_FLAGS", repr(tuple(x for x in flags if x != f)))))
    for f in fields:
        if f not in flags:
            out.append((f"EVALUATE_FLAGS with {f}", replace("EVALUATE_FLAGS", repr((*flags, f)))))
    for table in ("RESUME_KEEPS", "REQUIRES", "LIMITS"):
        entries = {k.value if isinstance(k, ast.Constant) else k.arg: ast.get_source_segment(source, v)
                   for k, v in (zip(tables[table].keys, tables[table].values) if isinstance(tables[table], ast.Dict)
                                else ((kw, kw.value) for kw in tables[table].keywords))}
        for key in entries:
            rest = ", ".join(f"{k}={v}" for k, v in entries.items() if k != key)
            out.append((f"{table} without {key}", replace(table, f"dict({rest})")))
        if table == "RESUME_KEEPS":
            for f in fields:
                if f not in entries and f not in ("resume", "evaluate", "total_timesteps"):
                    body = ", ".join(f"{k}={v}" for k, v in entries.items())
                    out.append((f"RESUME_KEEPS with {f}", replace(table, f"dict({body}, {f}='mutant')")))
    return out


def run_tables(tests_ref: str | None = None) -> tuple[int, list[str]]:
    source = (ROOT / "ppo.py").read_text()
    work = WORK / "tables"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("test_ppo.py", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "notes", work / "notes")
    if tests_ref:
        (work / "test_ppo.py").write_text(subprocess.run(["git", "show", f"{tests_ref}:test_ppo.py"], cwd=ROOT,
                                                         check=True, capture_output=True, text=True).stdout)
    survivors, mutants = [], table_mutants(source)
    for i, (what, mutated) in enumerate(mutants):
        (work / "ppo.py").write_text(mutated)
        # -x: the first failure kills the mutant. -p no:cacheprovider: nothing written beside the copy.
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "test_ppo.py",
                               "-k", " or ".join(TABLE_TESTS)], cwd=work, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        killed = done.returncode != 0
        print(f"  table mutant {i + 1}/{len(mutants)} {'killed  ' if killed else 'SURVIVED'} {what}", flush=True)
        if not killed:
            survivors.append(what)
    return len(mutants), survivors


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
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x\n")


def main(argv: list[str]) -> int:
    """python .ci/mutation.py [core] [checks] [tables] [--tests-from REF] [mutant names or globs: 'ppo.x_compute_gae*']"""
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
        subprocess.run([*mutmut, "run", "--max-children", str(os.cpu_count() or 2), *names], cwd=work, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        results = subprocess.run([*mutmut, "results"], cwd=work, env=env, capture_output=True, text=True).stdout
        subprocess.run([*mutmut, "export-cicd-stats"], cwd=work, env=env, check=True, capture_output=True)
        stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
        print(f"{group}: {stats} in {time.time() - t1:.0f} s; not killed (mutmut show NAME, in {work}):", flush=True)
        print(results, flush=True)
    if "tables" in parts:
        t1 = time.time()
        total, survivors = run_tables(tests_ref)
        print(f"tables: {total - len(survivors)} of {total} mutants killed in {time.time() - t1:.0f} s; surviving:",
              *survivors or ["none"], sep="\n  ")
    print(f"total: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
