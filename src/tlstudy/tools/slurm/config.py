"""slurm.yaml: what each kind of job asks Slurm for, kept out of params so that DVC never hashes it
(a new partition or a longer time limit must not invalidate a result).

    # slurm.yaml at the checkout's root; every key optional
    workdir: /scratch/me/tlstudy   # the jobs' working copies (default: .dvc/tmp/slurm in the checkout)
    data:   {time: "01:00:00", cpus: 4, mem: 16G}
    train:  {partition: gpu, account: lab, time: "24:00:00", cpus: 8, mem: 32G, gpus: 1}
    report: {time: "00:30:00", extra: ["--qos=short"]}

`data` is the job of the data stages (fetch, stats, inspect, variants), `train` every part's job and every
pretraining's, `report` the final job; `extra` is passed to sbatch as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from tlstudy.tools.slurm.errors import SlurmError

# sbatch's --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds, or no limit.
TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE", re.I)

KINDS = ("data", "train", "report")
RESOURCES = {
    "partition": "--partition={}",
    "account": "--account={}",
    "time": "--time={}",
    "cpus": "--cpus-per-task={}",
    "mem": "--mem={}",
    "gpus": "--gres=gpu:{}",
}
TOP_KEYS = ("workdir", *KINDS)


def load(path: Path) -> dict:
    """The validated config, `{}` when the file does not exist."""
    if not path.exists():
        return {}
    from ruamel.yaml import YAML, YAMLError

    try:
        # YAML 1.2, as DVC reads params: `time: 16:00:00` is a string there, not 57600.
        config = YAML(typ="safe", pure=True).load(path.read_text()) or {}
    except YAMLError as exc:
        raise SlurmError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(config, dict):
        raise SlurmError(f"{path}: expected a mapping of {', '.join(TOP_KEYS)}, got {type(config).__name__}")
    for key, value in config.items():
        if key not in TOP_KEYS:
            raise SlurmError(
                f"{path}: unknown key {key!r}; accepted: {', '.join(TOP_KEYS)} (job kinds: {', '.join(KINDS)})"
            )
        if key == "workdir":
            if not isinstance(value, str) or not value:
                raise SlurmError(f"{path}: 'workdir' must be a folder path, got {value!r}")
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise SlurmError(f"{path}: '{key}' must be a mapping of {', '.join([*RESOURCES, 'extra'])}")
        for name, setting in value.items():
            where = f"{path}: '{key}.{name}'"
            if name == "extra":
                if not isinstance(setting, list) or not all(isinstance(s, str) for s in setting):
                    raise SlurmError(f"{where} must be a list of sbatch options, e.g. ['--qos=short']")
            elif name not in RESOURCES:
                raise SlurmError(f"{where}: unknown setting; accepted: {', '.join([*RESOURCES, 'extra'])}")
            elif name in ("cpus", "gpus") and (
                not isinstance(setting, int) or isinstance(setting, bool) or setting < 1
            ):
                raise SlurmError(f"{where} must be a whole number of at least 1, got {setting!r}")
            elif not isinstance(setting, (str, int)) or isinstance(setting, bool) or str(setting) == "":
                raise SlurmError(f"{where} must be a string or a number, got {setting!r}")
            elif name == "time" and not TIME.fullmatch(str(setting)):
                raise SlurmError(
                    f"{where} is {setting!r}, not a time sbatch takes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                    'D-HH:MM:SS (quote it in YAML: time: "16:00:00")'
                )
    return config


def sbatch_options(config: dict, kind: str) -> list[str]:
    """The sbatch options of one kind of job, in a fixed order."""
    spec = config.get(kind) or {}
    options = [RESOURCES[name].format(spec[name]) for name in RESOURCES if name in spec]
    return options + list(spec.get("extra", []))


def cluster_of(options: list[str]) -> str | None:
    """The cluster(s) a kind's `extra` sends its jobs to (`--clusters=NAME`, `-M NAME`, as sbatch
    takes them, abbreviation `--cluster` included), or None: the login node's default."""
    found = None
    for i, option in enumerate(options):
        after = options[i + 1] if i + 1 < len(options) else None
        if option in ("-M", "--clusters", "--cluster"):
            found = after
        elif option.startswith(("--clusters=", "--cluster=")):
            found = option.split("=", 1)[1]
        elif option.startswith("-M") and not option.startswith("--"):
            found = option[2:].lstrip("=")
    return found or None
