"""`python -m tlstudy.tools.slurm.runcache [--push REMOTE] STAGE…`: record stages that `dvc repro` just
ran in DVC's run-cache, where DVC itself leaves them out, and with a remote, send the entries and
every file they name there.

DVC saves no run-cache entry for a stage with an output that is `cache: false` and not a metric or
a plot (DVC 2.42 on, treeverse/dvc#8738: meant for large uncached folders). fetch (`manifest.csv`,
`details/data.json`), pretrain, train (`plots/train/<part>.csv` is an out, drawn by a top-level
plot) and evaluate (`details/<part>.json`) all have one, so no job could hand its results on.
This saves the entries as DVC would have — `Stage.save(run_cache=True)`, which commits the
uncached outputs to the cache beside the entry (DVC's own mechanism for run-cached metrics) —
for stages whose outputs match dvc.lock; `dvc repro` then restores them wherever the cache is
shared. Where DVC saves an entry itself, this finds it and changes nothing.

`dvc push --run-cache` sends the entries but, since DVC 3, not the files of their uncached
outputs, so `dvc repro --pull` elsewhere would find an entry and not its files. `--push` sends
the entries and every file they name (`StageCache.get_used_objs`, what `dvc repro --pull`
fetches back).
"""

from __future__ import annotations

import sys


def save(targets: list[str], remote: str | None = None) -> int:
    from dvc.repo import Repo

    with Repo(".") as repo, repo.lock:
        for target in targets:
            stage = repo.stage.get_target(target)
            if stage.changed():
                # A stage out of step with dvc.lock must not vouch for its outputs.
                print(f"tlstudy slurm: {target}: changed since `dvc repro`; no run-cache entry", file=sys.stderr)
                return 1
            stage.save(run_cache=True)
        print(f"tlstudy slurm: in the run-cache: {' '.join(targets)}")
        if remote:
            entries = repo.stage_cache.push(remote)
            files = 0
            for objs in repo.stage_cache.get_used_objs(entries).values():
                files += len(objs)
                repo.cloud.push(objs, remote=remote)
            print(f"tlstudy slurm: {len(entries)} run-cache entries and their {files} files pushed to {remote}")
    return 0


def main(argv: list[str]) -> int:
    remote = None
    if argv[:1] == ["--push"]:
        remote, argv = argv[1], argv[2:]
    return save(argv, remote)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
