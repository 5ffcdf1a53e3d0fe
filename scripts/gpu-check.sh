#!/usr/bin/env bash
# The GPU check of the Performance section, as one command for a machine that has PyTorch and
# no network (the GPU lent to some sessions: the package runs from source, nothing installed).
#
# Prepare here, once:   mkdir -p gpu-data && cp -r ../shared/data/pacs_cartoon gpu-data/
#                       (46 MB; gpu-data/ is git-ignored, so the device tool must carry it)
# Run there:            bash scripts/gpu-check.sh      (carry gpu-data; writes to $OUT)
# Dry run on a CPU:     OUT=/tmp/gpu-check BENCH_ARGS="--per-class 3 --val-per-class 1 --repeats 1
#                       --head-epochs 1" EPOCHS=1 PARTS=fewshot_classifier bash scripts/gpu-check.sh
# Comes back (7 files): device.txt, tests.txt, bench.txt, bench.json, study.txt (seconds per
# stage), study-log.txt, study-results.tar.gz (metrics/, models/*/runs.json, plots/train/).
#
# 1. the engine and augmentation tests on that machine's torch/torchvision;
# 2. `tlstudy bench` at its device defaults (227 px and a worker per core on a GPU);
# 3. the default study's parts (PARTS, default all seven) on the carried PACS cartoon copy, each
#    stage timed: fetch, stats, train and evaluate per part, in a scratch workspace, with random
#    init where ImageNet weights are asked for (none can be downloaded there).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONPATH="$root/src" PYTHONUNBUFFERED=1
parts=${PARTS:-scratch classifier finetune fewshot_scratch fewshot_classifier fewshot_finetune augment}
data="$root/gpu-data/pacs_cartoon"
[ -d "$data" ] || { echo "gpu-check: $data missing; see the top of this script" >&2; exit 2; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"; } | tee "$out/device.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/device.txt"

python3 -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_augment.py 2>&1 | tail -3 | tee "$out/tests.txt"

# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
python3 -m tlstudy bench --data "$data" --out "$out/bench.json" ${BENCH_ARGS:-} 2>&1 | grep '^bench' | tee "$out/bench.txt"

ws=$(mktemp -d)
python3 - "$root/params.yaml" "$ws/params.yaml" "$data" "${EPOCHS:-}" <<'EOF'
import sys, yaml
src, dst, data, epochs = sys.argv[1:]
p = yaml.safe_load(open(src))
p["data"].update(source="local", path=data)
p["imagenet_weights"] = "random"
if epochs:
    p["epochs"] = int(epochs)
yaml.safe_dump(p, open(dst, "w"), sort_keys=False)
EOF
cd "$ws"
# At most 8 files come back from the device: logs and results go into one file each.
timed() {
    local start=$SECONDS
    echo "== $*" >> "$out/study-log.txt"
    python3 -m tlstudy "$@" >> "$out/study-log.txt" 2>&1 || { tail -20 "$out/study-log.txt"; exit 1; }
    echo "$* $((SECONDS - start)) s" | tee -a "$out/study.txt"
}
: > "$out/study.txt"
: > "$out/study-log.txt"
study_start=$SECONDS
timed fetch
timed stats
for part in $parts; do
    timed train --part "$part"
    timed evaluate --part "$part"
done
echo "study: $((SECONDS - study_start)) s for parts: $parts" | tee -a "$out/study.txt"
tar -czf "$out/study-results.tar.gz" metrics models/*/runs.json plots/train
