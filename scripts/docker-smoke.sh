#!/usr/bin/env bash
# Build the image and run the offline demo inside it; the first failing step stops the script
# and names itself. Needs a Docker engine with BuildKit. Not part of `make test`.
#   BASE_IMAGE=...   build on another base (default: the Dockerfile's PyTorch image)
#   CA_BUNDLE=...    a CA bundle for pip behind a TLS-intercepting proxy (a build secret)
#   DOCKER=...       the docker client to use (default: docker)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-repro}
docker=${DOCKER:-docker}
args=(--network host -t "$image")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${CA_BUNDLE:-}" ] && args+=(--secret "id=ca,src=$CA_BUNDLE")

step=""
trap 'echo "docker-smoke: FAILED at step: $step" >&2' ERR
run() { step="$1"; shift; echo "== $step"; local t0=$SECONDS; "$@"; echo "== $step: $((SECONDS - t0)) s"; }

run "build the image" env DOCKER_BUILDKIT=1 "$docker" build "${args[@]}" .
run "demo, offline, in the container" "$docker" run --rm --network none "$image" \
  bash -c 'make demo && test -s demo/metrics/scratch.json && test -s demo/report/README.md'
run "dvc is configured in the image" "$docker" run --rm --network none "$image" \
  bash -c 'dvc status >/dev/null && git -C /repro log --oneline | head -1'

# The real study with no network: it stops at the first download with one message; with weights
# files in the cache volume (state dicts made here under torchvision's names: not the real ones,
# so the stage warns) a fresh container gets past that stage and stops at the PACS download.
volume="${image}-smoke-cache"
"$docker" volume rm -f "$volume" >/dev/null
expect() {  # expect PATTERN CMD...: CMD fails, its output matches PATTERN and has no traceback
  local pattern=$1 out; shift
  if out=$("$@" 2>&1); then echo "$out"; echo "expected a failure" >&2; return 1; fi
  echo "$out" | tail -n 12
  echo "$out" | grep -q "$pattern" && ! echo "$out" | grep -q Traceback
}
run "offline: dvc repro stops at the weights download" expect "could not load the SqueezeNet 1.0 ImageNet weights" \
  "$docker" run --rm --network none -v "$volume:/cache" "$image" dvc repro
run "weights placed in the cache volume" "$docker" run --rm --network none -v "$volume:/cache" "$image" python3 -c '
import os, torch, torchvision.models as m
d = "/cache/torch/hub/checkpoints/"
os.makedirs(d, exist_ok=True)
torch.save(m.squeezenet1_0().state_dict(), d + "squeezenet1_0-b66bff10.pth")
torch.save(m.resnet18().state_dict(), d + "resnet18-f37072fd.pth")'
run "offline, a fresh container: past inspect, stops at the PACS download" expect "could not download PACS" \
  "$docker" run --rm --network none -v "$volume:/cache" "$image" dvc repro
"$docker" volume rm -f "$volume" >/dev/null
echo "image size: $("$docker" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"
echo "docker-smoke: OK"
