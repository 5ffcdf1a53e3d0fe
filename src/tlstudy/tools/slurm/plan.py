"""The Slurm jobs of a pipeline, read from DVC's own graph of dvc.yaml, so that a new part is a new
job with no code change.

- a **part job** per key of a foreach: the stages named `<group>@<key>` that are connected in the
  graph (`train@scratch` with `evaluate@scratch`, `transfer@x` with `evaluate_transfer@x`);
  `pretrain@<backbone>` is a job of its own, since no other stage shares its key;
- the **data job**: the stages outside any foreach that no foreach stage feeds (fetch, stats,
  inspect);
- the **final job**: everything else, i.e. what the parts feed (the report). It runs in the user's
  checkout, where `dvc repro` restores every other stage from the run-cache.

A job waits for the jobs that hold the stages upstream of its own (`--dependency=afterok`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

FINAL = "final"
DATA = "data"


@dataclass
class Job:
    name: str  # the first of its stages for a part job (train@scratch), else "data" / "final"
    kind: str  # data | train | report: which resources of slurm.yaml it asks for
    part: str | None  # the foreach key (a part or a backbone)
    stages: list[str]
    after: list[str] = field(default_factory=list)  # names of the jobs it waits for

    @property
    def folder(self) -> str:
        """A file name for the job: stage addressing may hold '/' and ':' (dvc.yaml in a subfolder)."""
        return self.name.replace("/", "_").replace(":", "_")


def _key(addressing: str) -> str | None:
    name = addressing.rsplit(":", 1)[-1]
    return name.split("@", 1)[1] if "@" in name else None


def from_graph(edges: dict[str, set[str]]) -> list[Job]:
    """Jobs from the stage graph: `edges[stage]` is the set of stages it depends on directly.
    `edges` must list every stage (one without dependencies maps to an empty set)."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(edges)
    graph.add_edges_from((stage, dep) for stage, deps in edges.items() for dep in deps)
    # Upstream first, ties broken by name, so the same dvc.yaml always gives the same jobs.
    order = list(reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: s))))
    rank = {s: i for i, s in enumerate(order)}
    upstream = {s: nx.descendants(graph, s) for s in order}
    keyed = {s for s in order if _key(s) is not None}

    final: set[str] = set()
    for s in order:  # upstream first, so a stage's upstream is classified before it
        if (s not in keyed and upstream[s] & keyed) or upstream[s] & final:
            final.add(s)
    data = [s for s in order if s not in keyed and s not in final]

    # Stages that share a key and are connected in the graph form one part job.
    same = nx.Graph()
    same.add_nodes_from(s for s in order if s in keyed and s not in final)
    same.add_edges_from((s, d) for s, d in graph.edges if s in same and d in same and _key(s) == _key(d))
    parts = sorted((sorted(c, key=rank.get) for c in nx.connected_components(same)), key=lambda c: order.index(c[0]))

    jobs: list[Job] = []
    if data:
        jobs.append(Job(DATA, "data", None, data))
    jobs += [Job(stages[0], "train", _key(stages[0]), stages) for stages in parts]
    job_of = {s: j.name for j in jobs for s in j.stages}
    for job in jobs:
        needs = {job_of[d] for s in job.stages for d in graph.successors(s) if d in job_of}
        job.after = sorted(needs - {job.name}, key=[j.name for j in jobs].index)
    jobs.append(Job(FINAL, "report", None, [s for s in order if s in final], [j.name for j in jobs]))
    return jobs


@dataclass
class Pipeline:
    edges: dict[str, set[str]]  # stage -> the stages it depends on
    deps: dict[str, list[str]]  # stage -> the paths it depends on, params files included
    outs: set[str]  # every path a stage writes
    files: set[str]  # the dvc.yaml files that declare the stages


def read(root: Path) -> Pipeline:
    """DVC's graph of the pipeline in `root`."""
    from dvc.repo import Repo

    # DVC names stages relative to the working directory: from the root, `train@x`.
    here = os.getcwd()
    os.chdir(root)
    try:
        with Repo(str(root)) as repo:
            return _pipeline(repo)
    finally:
        os.chdir(here)


def _pipeline(repo) -> Pipeline:
    graph = repo.index.graph
    # Stages with a command only: a .dvc file's data is not a stage to run.
    stages = {s for s in graph.nodes if getattr(s, "cmd", None)}
    return Pipeline(
        edges={s.addressing: {d.addressing for d in graph.successors(s) if d in stages} for s in stages},
        deps={s.addressing: [d.def_path for d in s.deps] for s in stages},
        outs={o.def_path for s in stages for o in s.outs},
        files={os.path.relpath(s.dvcfile.path, repo.root_dir) for s in stages},
    )
