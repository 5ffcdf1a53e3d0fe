"""The optimizers a part may train with, by name: how the engine builds one and which settings
its section in params.yaml holds. Validation, the engine, pretraining, dvc.yaml's params lists
(a test checks them), the resume key and the report all read this registry, so a new optimizer
is an entry here and its section in params.yaml.

torch is imported when an optimizer is built, not here: params validation reads the names.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlstudy.lib.errors import ParamsError


@dataclass(frozen=True)
class Optimizer:
    name: str  # in params (`optimizer: [sgd, adam]`) and as a part's group
    label: str  # in the report
    torch_class: str  # under torch.optim, with PyTorch's defaults but for `settings`
    settings: tuple[str, ...]  # the keys of its params section, passed to the class as they are
    # Fused on the CPU too (on CUDA always): fused kernels where they pay. PyTorch's default
    # per-tensor loop for CPU parameters makes an Adam step 64 ms for ResNet-18 on our 2-core CPU,
    # the fused one 11 ms (a 64 px batch of 32 trains in ~430 ms); SGD's loop is as fast as fused
    # there, and fused wins on CUDA.
    fused_on_cpu: bool


REGISTRY = {
    o.name: o
    for o in (
        Optimizer("sgd", "SGD", "SGD", ("momentum", "weight_decay"), fused_on_cpu=False),
        Optimizer("adam", "Adam", "Adam", ("weight_decay",), fused_on_cpu=True),
        Optimizer("adamw", "AdamW", "AdamW", ("weight_decay",), fused_on_cpu=True),
    )
}
NAMES = tuple(REGISTRY)


def label(name: str) -> str:
    """How the report writes an optimizer (a name not in the registry as it is)."""
    return REGISTRY[name].label if name in REGISTRY else name


def build(name: str, params, lr: float, sections: dict):
    """A torch optimizer over `params` at `lr`, with the settings of its section in `sections`
    (params, or any mapping of optimizer name -> settings)."""
    import torch

    if name not in REGISTRY:
        raise ParamsError(f"optimizer {name!r}: unknown; accepted: {', '.join(NAMES)}")
    spec = REGISTRY[name]
    params = list(params)
    cuda = bool(params) and params[0].is_cuda
    fused = True if spec.fused_on_cpu else (cuda or None)
    settings = sections[name]
    kwargs = {k: settings[k] for k in spec.settings if k in settings}  # a key left out: torch's default
    return getattr(torch.optim, spec.torch_class)(params, lr=lr, fused=fused, **kwargs)
