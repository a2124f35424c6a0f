#!/usr/bin/env bash
# device_benchmark.sh: the two measurements a 2-core CPU cannot make (notes/performance.md, "16 cores and a GPU"):
#   1. several processes: torchrun with 1, 2, 4 and 8 processes (gloo) on CartPole-v1 and HalfCheetah-v5, the same
#      total steps for each, then (as time allows) larger --num-envs per process; a gloo all-reduce micro-benchmark
#      first, which says what one gradient step's all-reduce costs on the host;
#   2. Atari on the GPU: ALE/Breakout-v5 with the Atari defaults, --cuda --async-envs, stopped by the wall clock
#      (SIGINT: the run finishes its iteration and saves a resumable checkpoint). Its learning curve is the first
#      steps of a default 10M-step run, the schedule CleanRL's published ppo_atari.py curves use.
# The two run side by side: Atari pinned to ATARI_CORES (8 env processes and the trainer), the torchrun runs to
# SCALE_CORES, so the 8-process runs have 8 cores of their own. The whole script keeps to BUDGET_S seconds of wall
# clock: each run is started only if it can finish, and stopped by `timeout` otherwise.
#
# Usage, from the repository root:
#   notes/device_benchmark.sh OUT_DIR            # full size: one GPU and 16 cores, about 8 minutes
#   TINY=1 notes/device_benchmark.sh OUT_DIR     # a few thousand steps of each, CPU only: checks the script
# Needs ppo.py's requirements plus ale-py and opencv; the GPU only for the full-size Atari run (--cuda).
# Environment (defaults in brackets):
#   PPO          the ppo.py to run [./ppo.py]          PY           the python that runs it [python3]
#   BUDGET_S     wall-clock seconds for everything [470; tiny 150]
#   ATARI_CORES  [0-7; tiny 0]                          SCALE_CORES  [8-15; tiny 1]
#   KS           process counts [1 2 4 8; tiny 1 2]     RUNS         run directories [/tmp/devbench_runs]
#   CUDA         the Atari run's --cuda or --no-cuda [full --cuda; tiny --no-cuda]
#   ATARI_RUN    0: no Atari run [1]                    AR           0: no all-reduce benchmark [1]
#   SKIP         torchrun runs to leave out, by name, e.g. "cartpole-k1 cheetah-k2" (a second call finishing a plan)
# Writes to OUT_DIR (at most 8 files, as the device tool returns them): log.txt (everything, as it happens),
# summary.txt (the tables), machine.txt, gpu.csv, runs.tgz (each run's args.json, episodes.csv, updates.csv).
set -u
OUT=${1:?usage: notes/device_benchmark.sh OUT_DIR}
mkdir -p "$OUT"
PPO=${PPO:-./ppo.py}
PY=${PY:-python3}
TINY=${TINY:-0}
if [ "$TINY" = 1 ]; then
    BUDGET_S=${BUDGET_S:-150}; ATARI_CORES=${ATARI_CORES:-0}; SCALE_CORES=${SCALE_CORES:-1}; KS=${KS:-"1 2"}
    CUDA=${CUDA:---no-cuda}; CP_STEPS=8192; HC_STEPS=4096; CP_BIG_STEPS=16384; HC_BIG_STEPS=8192; AR_REPS=100
else
    BUDGET_S=${BUDGET_S:-470}; ATARI_CORES=${ATARI_CORES:-0-7}; SCALE_CORES=${SCALE_CORES:-8-15}; KS=${KS:-"1 2 4 8"}
    CUDA=${CUDA:---cuda}; CP_STEPS=500000; HC_STEPS=200000; CP_BIG_STEPS=500000; HC_BIG_STEPS=200000; AR_REPS=1000
fi
RUNS=${RUNS:-/tmp/devbench_runs}
KMAX=${KS##* }
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S))
LOG="$OUT/log.txt"
ROWS="$RUNS/rows.csv"                        # one line per torchrun run: name,K,env,whole-process wall s,exit code
rm -rf "$RUNS"; mkdir -p "$RUNS/scale" "$RUNS/atari"
echo "name,K,env,wall_s,rc" > "$ROWS"
log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
left() { echo $((DEADLINE - $(date +%s))); }

pack() {   # every run's small files into one tarball, again after each run, so a cut-off run still returns them
    (cd "$RUNS" && tar czf "$OUT/runs.tgz.tmp" --exclude=checkpoint.pt --exclude='*.pt' . 2>/dev/null)
    mv -f "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
}

# ---- 2. Atari, in the background on its own cores ----------------------------------------------------------------
ATARI_RUN=${ATARI_RUN:-1}; AR=${AR:-1}; SKIP=${SKIP:-}
ATARI_S=$((BUDGET_S - 35))                  # leaves time to save the checkpoint and write the summary
ATARI_FLAGS=(--env-id ALE/Breakout-v5 $CUDA --async-envs --seed 1 --quiet --no-tensorboard --runs-dir "$RUNS/atari"
             --exp-name defaults)
[ "$ATARI_RUN" = 1 ] && log "atari: $PY $PPO ${ATARI_FLAGS[*]}  (stopped with SIGINT after ${ATARI_S}s)"
[ "$ATARI_RUN" = 1 ] && ( pin "$ATARI_CORES" timeout -s INT -k 30 "$ATARI_S" "$PY" "$PPO" "${ATARI_FLAGS[@]}" > "$RUNS/atari.log" 2>&1
  rc=$?; echo "atari exit code $rc after $(($(date +%s) - T0))s (124: stopped by the clock)" >> "$RUNS/atari.log"
  # If the GPU run failed early, the rest of the time goes to the same run on the CPU (4 torch threads).
  rest=$((ATARI_S - ($(date +%s) - T0)))
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rest" -gt 60 ] && [ "$CUDA" = --cuda ]; then
      echo "atari: retrying on the CPU for ${rest}s" >> "$RUNS/atari.log"
      pin "$ATARI_CORES" timeout -s INT -k 30 "$rest" "$PY" "$PPO" "${ATARI_FLAGS[@]}" --no-cuda --torch-threads 4 \
          --exp-name cpu-fallback >> "$RUNS/atari.log" 2>&1
      echo "atari (CPU) exit code $? after $(($(date +%s) - T0))s" >> "$RUNS/atari.log"
  fi ) &
ATARI=$!; [ "$ATARI_RUN" = 1 ] || ATARI=

# ---- the machine -------------------------------------------------------------------------------------------------
{
    echo "date: $(date -u)"; echo "nproc: $(nproc)"; uname -a
    lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|MHz|NUMA node" || true
    free -g 2>/dev/null | head -2 || true
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || true
    "$PY" -c "import sys, torch, numpy, gymnasium, ale_py, mujoco, cv2; print('python', sys.version.split()[0],
'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'gymnasium',
gymnasium.__version__, 'ale_py', ale_py.__version__, 'mujoco', mujoco.__version__, 'cv2', cv2.__version__)"
    echo "ppo.py sha256: $(sha256sum "$PPO" | cut -c1-16)"
    echo "budget ${BUDGET_S}s, Atari on cores $ATARI_CORES, torchrun on cores $SCALE_CORES, KS=$KS, tiny=$TINY"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" >> "$LOG"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm --format=csv -l 10 > "$OUT/gpu.csv" 2>&1 &
    GPUMON=$!
fi

# ---- 1a. what one gloo all-reduce costs here ---------------------------------------------------------------------
# gloo finds its network interface through the host name; a machine whose name does not resolve gets loopback.
if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && ! getent hosts "$(hostname)" >/dev/null 2>&1; then
    export GLOO_SOCKET_IFNAME=lo
fi
log "hostname $(hostname), GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-unset}"
cat > "$RUNS/ar.py" <<'EOF'
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo"); torch.set_num_threads(1)
reps = int(sys.argv[1])
for n in (1, 9_000, 60_000):       # one float; CartPole's agent (~9k parameters); 60k floats
    x = torch.randn(n)
    for _ in range(50): dist.all_reduce(x)
    t = time.perf_counter()
    for _ in range(reps): dist.all_reduce(x)
    us = (time.perf_counter() - t) / reps * 1e6
    if dist.get_rank() == 0: print(f"allreduce K={dist.get_world_size()} floats={n} us={us:.1f}", flush=True)
dist.destroy_process_group()
EOF
[ "$AR" = 1 ] && for k in 2 $KMAX; do
    pin "$SCALE_CORES" timeout 60 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$k" "$RUNS/ar.py" \
        "$AR_REPS" 2>&1 | grep allreduce | tee -a "$LOG"
done

# ---- 1b. torchrun: K processes, the same total steps -------------------------------------------------------------
scale() {   # scale NAME K ENV STEPS [FLAGS...]: one torchrun run, if at least NEED seconds are left
    local name=$1 k=$2 env=$3 steps=$4; shift 4
    case " $SKIP " in *" $name-k$k "*) log "left out $name K=$k (SKIP)"; return;; esac
    local budget=$(( $(left) - 40 ))
    if [ "$budget" -lt "${NEED:-20}" ]; then log "skipped $name K=$k: ${budget}s left"; return; fi
    local cmd=(torchrun --standalone --nproc-per-node "$k" ppo.py --env-id "$env" --total-timesteps "$steps" "$@")
    log "run $name: ${cmd[*]}"
    local t=$(date +%s.%N)
    pin "$SCALE_CORES" timeout -s INT -k 15 "$budget" "$PY" -m torch.distributed.run --standalone \
        --nproc-per-node "$k" "$PPO" --env-id "$env" --total-timesteps "$steps" "$@" --seed 1 --quiet \
        --no-tensorboard --runs-dir "$RUNS/scale" --exp-name "$name-k$k" > "$RUNS/$name-k$k.log" 2>&1
    local rc=$?
    local wall=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t }")
    echo "$name-k$k,$k,$env,$wall,$rc" >> "$ROWS"
    log "  rc=$rc wall=${wall}s: $(grep -E '^done|error' "$RUNS/$name-k$k.log" | tail -1)"
    pack
}
for k in $KS; do NEED=15 scale cartpole "$k" CartPole-v1 "$CP_STEPS"; done
for k in $KS; do NEED=20 scale cheetah "$k" HalfCheetah-v5 "$HC_STEPS"; done
# More envs per process: the same all-reduces per iteration, spread over more env steps.
for k in 1 "$KMAX"; do NEED=25 scale cartpole64 "$k" CartPole-v1 "$CP_BIG_STEPS" --num-envs 64; done
for k in 1 "$KMAX"; do NEED=40 scale cheetah32 "$k" HalfCheetah-v5 "$HC_BIG_STEPS" --num-envs 32; done

# ---- the end: wait for Atari, summarize --------------------------------------------------------------------------
log "torchrun runs done; waiting for Atari"
if [ -n "$ATARI" ]; then wait "$ATARI"; cat "$RUNS/atari.log" >> "$LOG"; fi
[ -n "${GPUMON:-}" ] && kill "$GPUMON" 2>/dev/null
pack
"$PY" - "$RUNS" > "$OUT/summary.txt" 2>&1 <<'EOF'
import csv, glob, os, sys
runs = sys.argv[1]

def read(path):
    if not os.path.exists(path):      # no episode ended yet: no episodes.csv
        return []
    with open(path) as f:
        return list(csv.DictReader(f))

def last100(eps):
    r = [float(e["episodic_return"]) for e in eps[-100:]]
    return sum(r) / len(r) if r else float("nan")

print("torchrun runs (training steps/s = global_step / wall_time of the last updates.csv row)")
print(f"{'run':<16}{'K':>3}{'steps':>10}{'train s':>9}{'steps/s':>9}{'vs K=1':>8}{'wall s':>8}{'episodes':>9}"
      f"{'last-100 return':>16}{'rc':>4}")
base = {}
for row in read(os.path.join(runs, "rows.csv")):
    d = glob.glob(os.path.join(runs, "scale", f"*__{row['name']}__*"))
    ups = read(os.path.join(d[0], "updates.csv")) if d else []
    eps = read(os.path.join(d[0], "episodes.csv")) if d else []
    if not ups:
        print(f"{row['name']:<16}{row['K']:>3}  no updates.csv rows (rc {row['rc']})")
        continue
    step, secs = int(ups[-1]["global_step"]), float(ups[-1]["wall_time"])
    sps = step / secs
    family = row["name"].rsplit("-k", 1)[0]
    if row["K"] == "1":
        base[family] = sps
    ratio = sps / base[family] if family in base else float("nan")
    print(f"{row['name']:<16}{row['K']:>3}{step:>10}{secs:>9.1f}{sps:>9.0f}{ratio:>7.2f}x{float(row['wall_s']):>8.1f}"
          f"{len(eps):>9}{last100(eps):>16.1f}{row['rc']:>4}")

for d in sorted(glob.glob(os.path.join(runs, "atari", "*"))):
    ups, eps = read(os.path.join(d, "updates.csv")), read(os.path.join(d, "episodes.csv"))
    if not ups:
        print(f"\nAtari {d}: no updates.csv rows"); continue
    step, secs = int(ups[-1]["global_step"]), float(ups[-1]["wall_time"])
    print(f"\nAtari {os.path.basename(d)}: {step} steps in {secs:.0f} s of training, {step / secs:.0f} steps/s, "
          f"{len(eps)} games, last 100 games {last100(eps):.1f}, best game "
          f"{max((float(e['episodic_return']) for e in eps), default=float('nan')):.0f}")
    print(f"{'step':>9}{'train s':>9}{'steps/s in window':>19}{'games':>7}{'last-100 return':>16}")
    marks, prev = [m for m in range(100_000, step + 1, 100_000)] or [step], (0, 0.0)
    for m in marks:
        u = next(u for u in ups if int(u["global_step"]) >= m)
        s, t = int(u["global_step"]), float(u["wall_time"])
        done = [e for e in eps if int(e["global_step"]) <= s]
        print(f"{s:>9}{t:>9.0f}{(s - prev[0]) / max(t - prev[1], 1e-9):>19.0f}{len(done):>7}{last100(done):>16.1f}")
        prev = (s, t)
EOF
cat "$OUT/summary.txt" | tee -a "$LOG"
log "finished"
