"""`python -m tlstudy.slurm.runcache STAGE…`: record stages that `dvc repro` just ran in DVC's
run-cache, where DVC itself leaves them out.

DVC saves no run-cache entry for a stage with an output that is `cache: false` and not a metric or
a plot (DVC 2.42 on, treeverse/dvc#8738: meant for large uncached folders). fetch (`manifest.csv`,
`details/data.json`), pretrain, train (`plots/train/<part>.csv` is an out, drawn by a top-level
plot) and evaluate (`details/<part>.json`) all have one, so no job could hand its results on.
This saves the entries as DVC would have — `Stage.save(run_cache=True)`, which commits the
uncached outputs to the cache beside the entry (DVC's own mechanism for run-cached metrics) —
for stages whose outputs match dvc.lock, and `dvc repro` then restores them anywhere that shares
the cache or pulls the run-cache. Where DVC saves an entry itself, this finds it and does nothing.
"""

from __future__ import annotations

import sys


def save(targets: list[str]) -> int:
    from dvc.repo import Repo

    saved = 0
    with Repo(".") as repo, repo.lock:
        for target in targets:
            stage = repo.stage.get_target(target)
            if stage.changed():
                # A stage out of step with dvc.lock must not vouch for its outputs.
                print(f"tlstudy slurm: {target}: changed since `dvc repro`; no run-cache entry", file=sys.stderr)
                return 1
            stage.save(run_cache=True)
            saved += 1
    print(f"tlstudy slurm: {saved} stage(s) in the run-cache: {' '.join(targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(save(sys.argv[1:]))
