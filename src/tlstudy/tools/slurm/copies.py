"""Working copies: each job runs `dvc repro` in a git clone of its own, since DVC locks the whole
repository while it runs (an experiment's `--temp` folder too).

A copy is HEAD of the user's checkout (`git clone --shared`: the objects are the checkout's, not
copied) with the checkout's current params files and the `-S` overrides applied by DVC's own
code, exactly as `dvc exp run -S` applies them, so the final job's `dvc exp run -S` in the
checkout computes the same params, and the run-cache matches. Copies live in a folder named by a
hash of (commit, params, checkout, cache), one sub-folder per job, so a requeued or resubmitted
job finds its copy, and its `work/runs/`, where it left them. The copies use the checkout's DVC
cache (its run-cache with it), or, with a DVC remote, a cache of their own filled and emptied
through that remote.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tlstudy.tools.slurm.errors import SlurmError

PARAMS = "params.yaml"


def git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if r.returncode:
        raise SlurmError(f"git {' '.join(args)} in {root}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def checkout_root(cwd: Path) -> Path:
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SlurmError(f"{cwd}: not in a git checkout; run this in the project's checkout or a profile workspace")
    root = Path(r.stdout.strip())
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise SlurmError(
            f"{root}: no .dvc/ and dvc.yaml here; run this in the project's checkout or a profile workspace"
        )
    return root


def overridden_params(root: Path, overrides: list[str]) -> dict[str, str]:
    """The text of every params file a copy gets: params.yaml and each file a `-S file:key=value`
    names, as the checkout has them now, with the overrides applied by DVC."""
    from dvc.exceptions import DvcException
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    by_file = to_path_overrides(overrides)
    texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted({PARAMS, *by_file}):
            source = root / name
            if not source.is_file():
                raise SlurmError(f"-S {' '.join(by_file.get(name, []))}: {source} does not exist")
            copy = Path(tmp) / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
            if by_file.get(name):
                try:
                    apply_overrides(copy, by_file[name])
                except DvcException as exc:
                    cause = f": {exc.__cause__}" if exc.__cause__ else ""
                    raise SlurmError(
                        f"-S {' '.join(by_file[name])}: DVC rejects it ({exc}{cause}); expected "
                        "[FILE:]KEY=VALUE as `dvc exp run -S` takes it, e.g. -S lr=0.01 -S 'lr=[0.01,0.001]'"
                    ) from exc
            texts[name] = copy.read_text()
    return texts


def key(commit: str, params: dict[str, str], checkout: Path, store: str) -> str:
    """The submission's name: its commit and params, and the checkout and the cache (or remote)
    the jobs feed, so that two checkouts sharing a `workdir` never take each other's jobs as their
    own (their final jobs would restore nothing and retrain the pipeline on one node)."""
    h = hashlib.sha256(commit.encode())
    for name, text in sorted(params.items()):
        h.update(f"\0{name}\0{text}".encode())
    h.update(f"\0checkout\0{checkout.resolve()}\0store\0{store}".encode())
    return h.hexdigest()[:12]


def make(dest: Path, root: Path, commit: str, params: dict[str, str], cache: Path | None,
         remote: str | None = None, links: list[str] = ()) -> None:  # fmt: skip
    """The working copy at `dest`: made once, then kept (its work/runs/ is how a train stage
    resumes); its params and DVC config are written on every submission."""
    if not (dest / ".git").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        git(dest.parent, "clone", "-q", "--shared", "--no-checkout", str(root), str(dest))
        git(dest, "checkout", "-q", "--detach", commit)
    elif git(dest, "rev-parse", "HEAD").strip() != commit:
        raise SlurmError(f"{dest}: a working copy of another commit is in the way; remove it")
    for name, text in params.items():
        (dest / name).write_text(text)
    # The checkout's local DVC settings (cache.shared, a remote's credentials) hold for the jobs.
    local = root / ".dvc" / "config.local"
    if local.exists():
        shutil.copyfile(local, dest / ".dvc" / "config.local")
    else:
        (dest / ".dvc" / "config.local").unlink(missing_ok=True)
    # The checkout's cache (its run-cache with it), or one of the copy's own, whatever the
    # checkout's config says, when a remote carries the outputs. Written as UTF-8 with configobj
    # (DVC's own format): DVC's config writer encodes ASCII only, and fails on a path like
    # /scratch/étude (DVC 3.67.1), while it reads UTF-8.
    from configobj import ConfigObj

    path = dest / ".dvc" / "config.local"
    conf = ConfigObj(str(path), encoding="utf-8") if path.exists() else ConfigObj(encoding="utf-8")
    conf.filename = str(path)
    conf.setdefault("cache", {})["dir"] = str(cache or dest / ".dvc" / "cache")
    if remote:
        conf.setdefault("core", {})["remote"] = remote
        conf[f'remote "{remote}"'] = remote_config(root, remote)
    conf.write()
    for rel in links:
        link = dest / rel
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((root / rel).resolve(), target_is_directory=(root / rel).is_dir())


def remote_config(root: Path, name: str) -> dict:
    """The remote's settings as the checkout has them — `.dvc/config`, committed or not (`dvc
    remote add` writes there, and the copies are clones of HEAD), then `config.local` (credentials)
    over it — with a local path made absolute: DVC reads a relative one against the config's folder."""
    from configobj import ConfigObj

    section = f'remote "{name}"'
    found: dict = {}
    for level in ("config", "config.local"):
        path = root / ".dvc" / level
        if path.exists():
            found.update(ConfigObj(str(path), encoding="utf-8").get(section, {}))
    url = found.get("url")
    if not url:
        raise SlurmError(
            f"--remote {name}: no url for it in {root / '.dvc/config'} or config.local; add it there "
            f"(dvc remote add -d {name} <url>) before submitting"
        )
    if "://" not in url and not Path(url).is_absolute():
        found["url"] = str((root / ".dvc" / url).resolve())
    return found


def cache_dir(root: Path) -> Path:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local_cache_dir).resolve()


def data_links(root: Path, params: dict) -> list[str]:
    """Data folders that params point to, present in the checkout but not in git (what `profile
    --data/--sources` links in, or a PACS folder already unpacked): the copies link to them, so a
    job neither downloads nor unpacks what the checkout has."""
    paths = [(params.get("data") or {}).get("path")]
    paths += [spec.get("path") for spec in (params.get("pretrain") or {}).values() if isinstance(spec, dict)]
    found = []
    for rel in filter(None, paths):
        if Path(rel).is_absolute() or not (root / rel).exists():
            continue
        if not git(root, "ls-files", "--", rel).strip():
            found.append(rel)
    return found


def source_paths(pipeline, taken: set[str]) -> list[str]:
    """What the stages depend on that no stage writes — code, data, dvc.yaml — but the params
    files the copies get from the checkout as they are now (`taken`)."""

    def written(path: str) -> bool:  # an output, inside one, or a folder holding outputs (report's `metrics`)
        return any(path == o or path.startswith(f"{o}/") or o.startswith(f"{path}/") for o in pipeline.outs)

    paths = {p for deps in pipeline.deps.values() for p in deps if not written(p) and p not in taken}
    return sorted(paths | pipeline.files)


def check_clean(root: Path, pipeline, taken: set[str]) -> None:
    """Refuse when what the stages depend on differs from HEAD: the jobs run HEAD's code and
    dvc.yaml, the final job the checkout's, and the run-cache would not match between them.
    `taken`: the params files the copies get from the checkout as they are now."""
    paths = source_paths(pipeline, taken)
    changed = git(root, "status", "--porcelain", "--untracked-files=all", "--", *paths).splitlines()
    if changed:
        listing = "\n".join(f"  {line}" for line in changed)
        head = git(root, "rev-parse", "--short", "HEAD").strip()
        raise SlurmError(
            f"{root}: files that stages depend on differ from HEAD ({head}):\n"
            f"{listing}\nthe jobs run HEAD's code, so commit (or stash) these first; params files may differ "
            "(the jobs take them as they are now)"
        )
    untracked = [p for p in paths if (root / p).exists() and not git(root, "ls-files", "--", p).strip()]
    if untracked:
        raise SlurmError(
            f"{root}: stages depend on files that git does not track, so the jobs' copies of HEAD would lack "
            f"them: {', '.join(untracked)}; add and commit them (or list them as a stage's outputs)"
        )
