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
echo "image size: $("$docker" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"
echo "docker-smoke: OK"
