# The study in a container:
#   docker build -t repro .
#   docker run --gpus all repro dvc repro
# BASE_IMAGE is the official PyTorch CUDA runtime image for our torch pin; any image with a
# pip-installable Python 3.10+ on PATH works (scripts/docker-smoke.sh builds on a Debian one).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Everything downloaded or cached lives under /cache: mount a volume there (-v repro-cache:/cache)
# and a fresh container downloads nothing twice — torchvision's weights (TORCH_HOME), the PACS
# archive (TLSTUDY_DOWNLOADS) and DVC's cache (cache.dir, set system-wide below).
ENV PYTHONUNBUFFERED=1 \
    TORCH_HOME=/cache/torch \
    TLSTUDY_DOWNLOADS=/cache/downloads \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    HOME=/home/repro

# git for DVC, make for the Makefile targets; unpinned: whatever the base's distribution ships.
# hadolint ignore=DL3008
RUN if ! command -v git >/dev/null || ! command -v make >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends git make \
      && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /repro

# Dependencies before the code, so a code change reuses this layer. Behind a TLS-intercepting
# proxy, pass its CA bundle as a build secret (--secret id=ca,src=bundle.crt): pip uses it and
# no layer keeps it.
COPY requirements.txt ./
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m pip install -r requirements.txt

# The project as a git + DVC repo. Editable install: with the checkout bind-mounted on /repro,
# the stages run the mounted code. Any owner of a mounted repo is trusted (git's ownership
# check), and a system-wide identity lets `dvc exp run` commit.
COPY . .
RUN python3 -m pip install --no-deps --no-build-isolation -e . \
    && git config --system --add safe.directory '*' \
    && git config --system user.name "repro" \
    && git config --system user.email "repro@localhost" \
    && git config --system init.defaultBranch main \
    && dvc config --system cache.dir /cache/dvc \
    && mkdir -p /cache && chmod 1777 /cache \
    && if [ ! -d .git ]; then git init -q && git add -A && git commit -qm "The study, as built into this image"; fi \
    && mkdir -p "$HOME" && chmod 1777 "$HOME" \
    && chown -R 1000:1000 /repro

# Not root: uid 1000, the usual owner of a checkout on a one-user machine. For another owner,
# add --user "$(id -u):$(id -g)" to `docker run` so results land owned by you. USER names the
# user for tools (DVC) that ask, since such a uid has no /etc/passwd entry.
ENV USER=repro LOGNAME=repro
USER 1000:1000
CMD ["dvc", "repro"]
