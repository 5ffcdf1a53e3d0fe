"""Pretrained weights from torchvision's model hub, with a way out when there is no network.

torchvision downloads a weights file once into `$TORCH_HOME/hub/checkpoints/` and checks its
sha256 against the prefix in the file's name (`resnet18-f37072fd.pth`: `f37072fd…`) — but only
when it downloads. A file found there is loaded as it is, so a file placed by hand (an offline
machine, a container whose cache is a volume) is checked here against the same prefix, and a
mismatch is said out loud before it is used. Any failure — no network, a refused connection, an
HTTP error, a corrupt download, a file that is no state dict — ends in one WeightsError that says
what was fetched, from where, why it failed, and the ways out.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import torch

from tlstudy.lib.errors import StudyError

HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention for a file's name


class WeightsError(StudyError, ValueError):
    pass


def cache_dir() -> Path:
    """Where torchvision looks first: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_dir_in_words() -> str:
    here = cache_dir()
    default = "$TORCH_HOME/hub/checkpoints, with TORCH_HOME defaulting to $XDG_CACHE_HOME/torch or ~/.cache/torch"
    return f"{here} ({default})"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ways_out(file_name: str, prefix: str | None, key: str) -> str:
    """What a user can do instead of downloading. `key` is the params key that takes a path."""
    random_key = "imagenet_weights: random" if key == "init" else "inspect.weights: random"
    check = f" (its sha256 must start with {prefix})" if prefix else ""
    return (
        "Ways out:\n"
        f"  - put the file {file_name} in {cache_dir_in_words()}{check}; torchvision looks there first\n"
        f"  - or set `{key}: <path>` in params.yaml to a state-dict file you have\n"
        f"  - or set `{random_key}` for a smoke run on random weights (the numbers then mean nothing)"
    )


def state_dict(weights, what: str, key: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision `Weights` entry (`what` names it for people), from the
    cache when it is there and its bytes match its name, else downloaded and hash-checked."""
    file_name = os.path.basename(urlparse(weights.url).path)
    m = HASH_PREFIX.search(file_name)
    prefix = m.group(1) if m else None
    cached = cache_dir() / file_name
    if cached.is_file() and prefix is not None:
        actual = _sha256(cached)
        if not actual.startswith(prefix):
            # Not torchvision's file (another release, a copy of other weights, damage): say so
            # loudly, then load it as it is — a user who placed it may mean it; one that is not a
            # state dict of this architecture fails to load just below or when it is applied.
            print(
                f"warning: {cached}: these {what} are not torchvision's file: their sha256 is {actual}, "
                f"their name says it starts with {prefix}. Loading them as they are; to use torchvision's, "
                f"replace the file with the one from {weights.url} or remove it to download it again.",
                file=sys.stderr,
            )
    origin = f"{cached}" if cached.is_file() else f"{weights.url} (to {cached})"
    try:
        # What WeightsEnum.get_state_dict does; a plain Weights entry (tests) has no such method.
        return torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True, weights_only=True)
    except Exception as exc:  # urllib, http, ssl, torch.load and hash errors share no base class
        raise WeightsError(
            f"could not load the {what} from {origin}: {_reason(exc)}\n{ways_out(file_name, prefix, key)}"
        ) from None


def _reason(exc: BaseException) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"no connection ({exc.reason})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "invalid hash value" in text:
        return f"the download is corrupt: {text}; nothing was kept"
    return text
