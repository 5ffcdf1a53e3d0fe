#!/usr/bin/env bash
# The study as the image runs it — `dvc repro` of this dvc.yaml in a profile workspace, every
# stage, at the study's own settings (params.yaml: 227 px, lr 5 x SGD/Adam, 50 epochs, every
# part, pretrain@pacs_sources, both augmentation sweeps) — on the GPU machine that the device
# tool lends: PyTorch but no DVC, no network. profiles/gpu-check.yaml holds the only changes
# that machine forces (random weights where ImageNet's are asked for; the carried data read in
# place); EPOCHS=N shortens every stage for a first pass.
#
# 1. Prepare here, once, just before the device call (needs ../shared/data and the package
#    registry):   bash scripts/gpu-check.sh prepare
#    It (re)builds the git-ignored gpu-data/ and prints each part's size; it fails if the repo and
#    gpu-data together are over the device tool's 64 MiB:
#      gpu-data/pacs_cartoon/  every PACS cartoon JPEG with its official split lists (41.2 MiB)
#      gpu-data/wheels/        Python 3.12 x86-64 wheels of DVC and the dependencies the image
#                              lacks (KEEP below, 9.1 MiB); LEFT_OUT names what is not carried
#      gpu-data/pacs_sources/  a seeded sample of PACS's other domains, the same number of images
#                              per domain x class, as many as fit in what is left but MARGIN_MIB
#                              (default 1); SOURCES_PER_CLASS=N fixes it. Pretraining only.
# 2. Run there: the device tool's run, carry ["gpu-data"], timeout_s 600, command
#        EPOCHS=2 DEADLINE=560 BENCH_TIMEOUT=150 bash scripts/gpu-check.sh
#    It installs the wheels (to /tmp/gpu-check-site), records the machine, runs the tests, then
#    the study with 2 epochs per run and 1 of pretraining until 150 s before DEADLINE (seconds
#    from its start), then the bench until DEADLINE, then packs what it has. While that machine
#    is warm (30 s after a call), the same command with TESTS= BENCH=0 continues the study in the
#    same workspace: finished stages are skipped, a stopped train stage resumes after its last
#    finished run. Without EPOCHS it is the study's own 50 epochs and 30 of pretraining: more
#    than one session's 15 minutes of device time, so leave DEADLINE out only on a longer lease.
# 3. Comes back in $OUT (7 files; the tool returns at most 8), each written as soon as it is known:
#      machine.json     python -m tlstudy.tools.machine: CPU and its kernel-selecting flags, threads,
#                       GPU, CUDA, driver, library versions
#      tests.txt        the engine and augmentation tests' result line on that machine's torch
#      timing.json      the profile's work/timing.json: seconds of every stage that ran
#      results.tar.gz   the workspace's params.yaml, dvc.lock, metrics/, details/,
#                       models/*/runs.json, plots/train/, plots/pretrain/, report/summary.md
#      bench.json       python -m tlstudy bench --size 227 on the carried cartoon images
#      summary.txt      stage seconds, each part's selected models' test accuracy, bench lines
#      log.txt          everything printed, in order
#
# Dry run on a CPU: tests/scripts/test_gpu_check.py runs this script on tiny data laid out as gpu-data/.
# Environment: GPU_DATA (default gpu-data/), OUT (/tmp/gpu-check), WS (the profile's workspace,
# /tmp/gpu-check-ws; an existing one continues, FRESH=1 rebuilds it), PYTHON (python3), SITE
# (where the wheels install, /tmp/gpu-check-site), EPOCHS and PRETRAIN_EPOCHS (default half of
# EPOCHS, at least 1), SETS (more KEY=VALUE for `profile --set`, space-separated),
# DEADLINE (seconds from the start by which everything is done), BENCH_TIMEOUT (seconds kept
# for the bench), STUDY_TIMEOUT (seconds for the study, instead of what DEADLINE leaves), TESTS
# (pytest arguments; empty skips the tests), BENCH=0 (no bench), BENCH_ARGS (added after
# `bench --size 227`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
data=${GPU_DATA:-$root/gpu-data}
budget=$((64 * 1024 * 1024))

# DVC's dependencies that the device image lacks, as wheels, at the versions this project's .venv
# has (requirements.txt), so the device runs the DVC the tests run here. `dvc init`, `config`,
# `repro`, `status`, `metrics show/diff`, `params diff`, `exp show` and `plots show` ran with
# exactly these over the packages KINDS.md lists for the image (this .venv's versions of them),
# in a clean Python 3.12 venv. pygit2 (4.7 MiB) stays: `dvc init` in a git repository lists
# submodules through it; celery and its kin stay for `dvc exp show`.
KEEP=(
    dvc dvc-data dvc-objects dvc-render dvc-studio-client dvc-http dvc-task
    scmrepo dulwich pygit2 cffi gitpython gitdb smmap pygtrie funcy
    celery kombu amqp billiard vine shortuuid tzlocal
    aiohttp-retry appdirs atpublic configobj dictdiffer diskcache distro dpath flatten-dict flufl.lock
    grandalf iterative-telemetry orjson platformdirs pydot ruamel.yaml shtab sqltrie tomlkit
    voluptuous zc.lockfile
)
# Left out: those commands ran without them (9.2 MiB of wheels): asyncssh, cryptography (git
# over SSH); pycparser (cffi's C parser: pygit2's compiled binding does not need it); hydra-core,
# omegaconf, antlr4 (`dvc exp run -S` parses overrides with Hydra, so it fails there: use
# `profile --set`); pydantic, pydantic-core, annotated-types, typing-inspection,
# pydantic-settings, python-dotenv, gto, semver, entrypoints (`dvc artifacts`, the model
# registry); prompt-toolkit, wcwidth, click-repl, click-didyoumean, click-plugins (celery's
# command line; tabulate falls back to len() without wcwidth).
LEFT_OUT="asyncssh cryptography pycparser hydra-core omegaconf antlr4-python3-runtime pydantic pydantic-core
annotated-types typing-inspection pydantic-settings python-dotenv gto semver entrypoints prompt-toolkit wcwidth
click-repl click-didyoumean click-plugins"

die() {
    echo "gpu-check: $*" >&2
    exit 2
}

size_of() { # bytes of the regular files under the given paths
    find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

repo_bytes() { # what the device tool sends besides carry: tracked and untracked-not-ignored files
    git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c '%s' 2>/dev/null |
        awk '{s += $1} END {print s + 0}'
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

prepare() {
    local py=${PYTHON:-$root/.venv/bin/python} shared=${SHARED:-$root/../shared/data}
    local margin=$((${MARGIN_MIB:-1} * 1024 * 1024))
    [ -d "$shared/pacs_cartoon/splits" ] ||
        die "$shared/pacs_cartoon/splits missing (SHARED= the folder holding pacs_cartoon and pacs_sources)"
    [ -d "$shared/pacs_sources" ] || die "$shared/pacs_sources missing"
    rm -rf "$data"
    mkdir -p "$data"
    cp -r "$shared/pacs_cartoon" "$data/pacs_cartoon"
    if [ "${WHEELS:-1}" != 0 ]; then
        local pins
        pins=$("$py" -c 'import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${KEEP[@]}")
        # shellcheck disable=SC2086  # pins is a list of name==version
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$data/wheels" $pins
    fi
    local repo cartoon sources wheels total per
    repo=$(repo_bytes)
    cartoon=$(size_of "$data/pacs_cartoon")
    wheels=$(size_of "$data/wheels")
    # The source images get what is left but the margin: the repo grows between now and the run.
    per=$("$py" - "$shared/pacs_sources" "$data/pacs_sources" "${SOURCES_PER_CLASS:-auto}" \
        $((budget - margin - repo - cartoon - wheels)) <<'EOF'
import random
import shutil
import sys
from pathlib import Path

src, dst, per, room = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
# A seeded order per domain x class rather than the first names: names group by origin (photo's
# 056_*), so a first-N cut would pretrain on a few of them. A sample of N is the order's first N.
order = {}
for group in sorted(p for p in src.glob("*/*") if p.is_dir()):
    files = sorted(group.iterdir())
    order[group] = random.Random(f"{group.parent.name}/{group.name}").sample(files, len(files))


def size(n):
    return sum(f.stat().st_size for files in order.values() for f in files[:n])


if per == "auto":
    n = 0
    while n < max(map(len, order.values())) and size(n + 1) <= room:
        n += 1
else:
    n = int(per)
if n < 1:
    sys.exit(f"no room for source images: {room} bytes left")
for group, files in order.items():
    dest = dst / group.parent.name / group.name
    dest.mkdir(parents=True, exist_ok=True)
    for f in files[:n]:
        shutil.copy2(f, dest / f.name)
print(n)
EOF
    ) || die "sampling the source images failed"
    sources=$(size_of "$data/pacs_sources")
    total=$((repo + cartoon + sources + wheels))
    echo "carry budget: the working tree and carry together, at most $(mib "$budget")"
    echo "  repo (tracked + untracked-not-ignored)  $(mib "$repo")  ($repo bytes)"
    echo "  gpu-data/pacs_cartoon                   $(mib "$cartoon")  ($(find "$data/pacs_cartoon" -name '*.jpg' | wc -l) images, all)"
    echo "  gpu-data/pacs_sources                   $(mib "$sources")  ($(find "$data/pacs_sources" -type f | wc -l) images, $per per domain x class)"
    echo "  gpu-data/wheels                         $(mib "$wheels")  ($(find "$data/wheels" -name '*.whl' 2>/dev/null | wc -l) wheels)"
    echo "  total                                   $(mib "$total")  ($total bytes; $(mib $((budget - total))) to spare)"
    echo "  wheels left out (dvc init/repro/exp show need none of them): $(echo "$LEFT_OUT" | tr '\n' ' ')"
    [ "$total" -le "$budget" ] || die "over the budget by $(mib $((total - budget))): lower SOURCES_PER_CLASS"
}

bounded() { # bounded SECONDS CMD...: CMD, stopped with its children after SECONDS when set
    local limit=$1
    shift
    if [ -n "$limit" ]; then timeout "$limit" "$@"; else "$@"; fi
}

left() { # seconds to DEADLINE (from the script's start) less $1, at least 60; empty without one
    if [ -n "${DEADLINE:-}" ]; then
        local s=$((DEADLINE - SECONDS - $1))
        echo $((s > 60 ? s : 60))
    fi
}

check() {
    local py=${PYTHON:-python3} out=${OUT:-/tmp/gpu-check} ws=${WS:-/tmp/gpu-check-ws}
    local site=${SITE:-/tmp/gpu-check-site} status=0 rc
    [ -d "$data/pacs_cartoon" ] && [ -d "$data/pacs_sources" ] ||
        die "$data/pacs_cartoon or pacs_sources missing: run \`bash scripts/gpu-check.sh prepare\` here and carry gpu-data"
    command -v git >/dev/null || die "git not found: DVC and the profile's workspace need it"
    # No DVC analytics daemon: there is no network to send to.
    export PYTHONPATH="$root/src:$site" PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
    # DVC from the carried wheels, unless this Python has it already (a dry run in .venv).
    if ! "$py" -c 'import dvc.repo' 2>/dev/null; then
        compgen -G "$data/wheels/*.whl" >/dev/null || die "no DVC for $py and no wheels in $data/wheels"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$data"/wheels/*.whl
    fi
    echo "== dvc $("$py" -m dvc --version) from $("$py" -c 'import dvc, os; print(os.path.dirname(dvc.__file__))')"

    echo "== machine"
    nvidia-smi || echo "no nvidia-smi"
    "$py" -m tlstudy.tools.machine | tee "$out/machine.json" || status=1

    local tests=()
    read -r -a tests <<<"${TESTS-tests/training/test_engine.py tests/training/test_augment.py}"
    if [ "${#tests[@]}" -gt 0 ]; then
        echo "== tests: ${tests[*]}"
        local log
        log=$(mktemp)
        "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$log" || status=1
        { grep -E '^(FAILED|ERROR) ' "$log" || true; tail -n 1 "$log"; } >"$out/tests.txt"
        rm -f "$log"
    else
        echo "tests skipped (TESTS empty)" >"$out/tests.txt"
    fi

    local sets=() extra=()
    if [ -n "${EPOCHS:-}" ]; then
        sets+=(--set "epochs=$EPOCHS" --set "pretrain.pacs_sources.epochs=${PRETRAIN_EPOCHS:-$(((EPOCHS + 1) / 2))}")
    fi
    read -r -a extra <<<"${SETS:-}"
    for s in "${extra[@]}"; do sets+=(--set "$s"); done
    local study=("$py" -m tlstudy profile profiles/gpu-check.yaml --dir "$ws" --data "$data/pacs_cartoon"
        --sources "$data/pacs_sources" "${sets[@]}")
    if [ -n "${FRESH:-}" ]; then study+=(--fresh); fi
    # What the bench and the packing need is kept back from DEADLINE; the study has the rest.
    local study_limit=${STUDY_TIMEOUT:-$(left $((${BENCH_TIMEOUT:-0} + 20)))}
    echo "== study${study_limit:+ (at most $study_limit s)}: ${study[*]}"
    rc=0
    bounded "$study_limit" "${study[@]}" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "== study: exit $rc$([ "$rc" = 124 ] && echo ", stopped after $study_limit s: run again to continue")"
        status=1
    fi
    if [ -f "$ws/work/timing.json" ]; then cp "$ws/work/timing.json" "$out/timing.json"; fi
    local keep=() p
    for p in params.yaml dvc.lock metrics details plots/train plots/pretrain report/summary.md "$ws"/models/*/runs.json; do
        p=${p#"$ws"/}
        if [ -e "$ws/$p" ]; then keep+=("$p"); fi
    done
    if [ "${#keep[@]}" -gt 0 ]; then tar -czhf "$out/results.tar.gz" -C "$ws" "${keep[@]}"; fi

    local bench_log
    bench_log=$(mktemp)
    if [ "${BENCH:-1}" != 0 ]; then
        local bench_limit=${BENCH_TIMEOUT:-}
        if [ -n "${DEADLINE:-}" ]; then bench_limit=$(left 10); fi
        echo "== bench${bench_limit:+ (at most $bench_limit s)}"
        rc=0
        # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
        bounded "$bench_limit" "$py" -m tlstudy bench --data "$data/pacs_cartoon" --size 227 \
            --out "$out/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$bench_log" || rc=$?
        if [ "$rc" != 0 ]; then
            echo "== bench: exit $rc"
            status=1
        fi
    fi

    {
        "$py" - "$ws" <<'EOF'
import json
import sys
from pathlib import Path

from tlstudy.tools.profile import summary

ws = Path(sys.argv[1])
timing = ws / "work" / "timing.json"
if timing.exists():
    stages = json.loads(timing.read_text())["stages"]
    print(f"stages timed: {len(stages)}, {sum(stages.values()):.0f} s in all")
    for stage, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {s:8.1f} s  {stage}")
if (ws / "metrics").is_dir():
    print(summary(ws / "metrics"))
EOF
        grep '^bench' "$bench_log" || true
    } >"$out/summary.txt" || status=1
    rm -f "$bench_log"
    cat "$out/summary.txt"
    return "$status"
}

case "${1:-check}" in
prepare) prepare ;;
check)
    out=${OUT:-/tmp/gpu-check}
    mkdir -p "$out"
    # Written as it goes, so a run the device tool stops at its limit still returns the log.
    check 2>&1 | tee "$out/log.txt"
    ;;
*) die "usage: bash scripts/gpu-check.sh [prepare|check]" ;;
esac
