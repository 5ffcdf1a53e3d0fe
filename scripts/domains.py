#!/usr/bin/env python3
"""Is cartoon special? The offline study with each PACS domain as the target, as DVC experiments
in the offline profile's workspace, and their publication.

    python scripts/domains.py run        # the experiments not yet done, one target at a time
    python scripts/domains.py publish    # results/domains/: per target metrics, details, predictions; table, figure

Both take `--workspace DIR` (default work/profiles/offline), `--offline DIR` (the offline
profile's publication, default results/offline) and `--targets DOMAIN ...` (default: every PACS
domain but the baseline's own); `publish` also `--out DIR` (default results/domains), so that both
can run on a small workspace of generated images.

`run` needs the offline workspace (`make offline` builds it). Each target T is one
`dvc exp run -n target-<T> -S data.domain=<T>` there (with `--data`/`--sources`, the PACS folders a
machine has, linked in at LOCAL and read with `source: local`; without, the archive), on the
baseline's params.yaml: fetch gives
T's images (a domain without official split lists gets a seeded split stratified by class,
recorded in details/data.json), `pretrain@<backbone>` trains a ResNet-18 from random init on the
other three domains and measures it on T's test images with no training on T, and the six parts
(scratch, head-only and fine-tuning, on the full and the few-shot subset) train on T with the
profile's optimizers, grid and seeds. The two augmentation sweeps are left out, as the budget
script leaves them out (`without_sweeps`). Interrupted, it continues: finished experiments are
skipped, an unfinished one runs again before any other, with the stages it finished kept and its
`train` stage resuming after its last finished run. Each finished target is carried out of the workspace at
once, into results/domains/<T>/ (`carry`): commit it, and a later `run` (in a new workspace,
prepared without its baseline where there is none) skips it and `publish` reads it there. Wall and
CPU seconds of every experiment and stage, per sitting, go to the workspace's
work/domains-timing.json.

The baseline's own target (cartoon) is not run again: its row is the offline publication, read
from its files (metrics, details and details/predictions). A publication made before evaluate@
wrote per-image predictions cannot be compared image by image, and `publish` says to republish it.

`publish` writes results/domains/, replaced whole once everything is computed: per target its
params.yaml, dvc.lock, data details, the backbone's metrics and details, and per part its
metrics, details and per-image predictions (experiments: overrides.json too); domains.json (the
numbers, the family of tests and the ceilings); summary.md (the table); findings.md (the family's
verdicts in a line, which the README quotes); domains.png; timing.json (CPU time and sittings per
target).
The family "each transfer part vs scratch across target domains" holds, per target and transfer
part, the selected model minus the same target's scratch model on the same subset, from the
per-image predictions (report.verdicts.difference: a paired bootstrap over test images and
seeds), Holm-corrected together (findings.judge; docs/statistics.md).

Ceilings, not comparisons, two of them. DomainBed's ERM on PACS (Gulrajani & Lopez-Paz, "In Search
of Lost Domain Generalization", ICLR 2021), from facebookresearch/DomainBed,
domainbed/results/2020_10_06_7df6f06/results.tex (the results of its commit 7df6f06, which its
README links), section "Model selection: training-domain validation set", table PACS, row ERM:
A 84.7 ± 0.4, C 80.8 ± 0.6, P 97.2 ± 0.3, S 79.3 ± 1.0 (mean ± standard error over trials). That
is an ImageNet-pretrained ResNet-50 (hparams_registry: resnet18 False) at 224 px (datasets.py),
trained on the three other domains with no label of the target seen, its model selected on
validation images of those training domains. And DeepDG's ERM with our architecture, ResNet-18
(jindongwang/transferlearning, code/DeepDG/readme.md at commit 05be54c, "Results on PACS
(ResNet-18)", row ERM): A 81.1, C 77.94, P 95.03, S 76.94, one number each, no spread given.
Its code: torchvision's resnet18(pretrained=True) (network/img_network.py), 224 px crops of
256 (datautil/imgdata/util.py), the target's accuracy at the best validation accuracy of the
training domains (train.py), the same leave-one-domain-out task.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
from tlstudy import params as P  # noqa: E402
from tlstudy.lib import findings  # noqa: E402
from tlstudy.lib.atomic import save_figure, write_json, write_text  # noqa: E402
from tlstudy.tools import experiments as X  # noqa: E402
from tlstudy.tools.experiments import experiments, folder_text, parser, ref_text, run_all, sh, totals  # noqa: E402

WORKSPACE = PROJECT / "work/profiles/offline"
OFFLINE = PROJECT / "results/offline"
OUT = PROJECT / "results/domains"
TIMING = "work/domains-timing.json"
FAMILY = "each transfer part vs scratch across target domains"
# (subset, strategy) in the table's order, and each one's column.
COLUMNS = {
    ("full", "scratch"): "scratch",
    ("full", "head-only"): "head-only",
    ("full", "fine-tuning"): "fine-tuning",
    ("fewshot", "scratch"): "few-shot scratch",
    ("fewshot", "head-only"): "few-shot head-only",
    ("fewshot", "fine-tuning"): "few-shot fine-tuning",
}
DOMAINBED = {
    "name": "DomainBed ERM",
    "source": "facebookresearch/DomainBed, domainbed/results/2020_10_06_7df6f06/results.tex (results of commit "
    "7df6f06), 'Model selection: training-domain validation set', table PACS, row ERM",
    "url": "https://github.com/facebookresearch/DomainBed/blob/main/domainbed/results/2020_10_06_7df6f06/results.tex",
    "paper": "Gulrajani & Lopez-Paz, In Search of Lost Domain Generalization, ICLR 2021",
    "setting": "ResNet-50 from ImageNet weights, 224 px, trained on the three other domains (no label of the target "
    "seen), model selected on validation images of the training domains; mean ± standard error over trials",
    "backbone": "ResNet-50",
    # Test accuracy in %, (mean, standard error), by held-out domain.
    "acc": {"art_painting": [84.7, 0.4], "cartoon": [80.8, 0.6], "photo": [97.2, 0.3], "sketch": [79.3, 1.0]},
}
DEEPDG = {
    "name": "DeepDG ERM",
    "source": "jindongwang/transferlearning, code/DeepDG/readme.md (commit 05be54c), 'Results on PACS (ResNet-18)', "
    "row ERM",
    "url": "https://github.com/jindongwang/transferlearning/tree/master/code/DeepDG",
    "paper": "Wang & Lu, DeepDG: Deep Domain Generalization Toolkit",
    "setting": "ResNet-18 from ImageNet weights, 224 px, trained on the three other domains (no label of the target "
    "seen), model selected on validation images of the training domains; one number, no spread given",
    "backbone": "ResNet-18",
    # One figure per held-out domain: the readme gives no spread (None).
    "acc": {"art_painting": [81.1, None], "cartoon": [77.94, None], "photo": [95.03, None], "sketch": [76.94, None]},
}
CEILINGS = [DOMAINBED, DEEPDG]
CEILING_STYLES = [{"color": "tab:red", "ls": "-"}, {"color": "tab:purple", "ls": "--"}]  # the figure's lines


def shown(path: Path) -> str:
    """A path as the outputs name it: relative to the project where it is inside it."""
    try:
        return path.resolve().relative_to(PROJECT).as_posix()
    except ValueError:
        return str(path)


def plan(baseline: str, targets: list[str] | None, offline: Path) -> dict[str, str]:
    """experiment name -> its target domain, in PACS's order."""
    chosen = targets or [d for d in P.DOMAINS if d != baseline]
    if baseline in chosen:
        raise SystemExit(
            f"domains: --targets {baseline}: the baseline's own target; its row is the offline publication "
            f"({shown(offline)}), not an experiment; name other domains only"
        )
    return {f"target-{d}": d for d in P.DOMAINS if d in chosen}


# Where `run --data/--sources` links the PACS folders a machine already has, in the workspace: one
# <domain>/ per domain, so that params name them by a path that is the same on every machine.
LOCAL = "work/pacs-local"


def overrides(domain: str, dropped: list[str], local: list[str] | None = None) -> list[str]:
    """A target's -S list; with `local` (the backbones link_local reads from LOCAL) its images and
    its sources' come from the linked folders."""
    read = []
    if local is not None:
        read = ["data.source=local", f"data.path={LOCAL}/{domain}"]
        for b in local:
            read += [f"pretrain.{b}.source=local", f"pretrain.{b}.path={LOCAL}"]
    return [f"data.domain={domain}", *read, *dropped]


def link_local(ws: Path, head: dict, names: dict[str, str], data: Path | None, sources: Path | None):
    """Links the baseline domain's folder (`data`) and every <domain>/ of `sources` into the
    workspace at LOCAL, so that each target and its sources are read from there (`source: local`)
    instead of the PACS archive, which needs the network once; returns the backbones to point
    there (None: no folders given). Refused, naming the folders, when a target or one of its
    source domains is in neither."""
    if data is None and sources is None:
        return None
    found = {P.target_domain(head): data} if data is not None else {}
    if sources is not None:
        found.update({d: sources / d for d in P.DOMAINS if (sources / d).is_dir()})
    found = {d: f for d, f in found.items() if f.is_dir()}
    for domain in names.values():
        params = {**head, "data": {**head["data"], "domain": domain}}
        missing = [d for d in [domain, *P.source_domains(params)] if d not in found]
        if missing:
            raise SystemExit(
                f"domains: target {domain} needs {', '.join(missing)}, in neither --data {data} nor --sources "
                f"{sources}; give --sources a folder with a <domain>/<class>/<image> tree for each of them"
            )
    root = ws / LOCAL
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for domain, folder in found.items():
        (root / domain).symlink_to(folder.resolve(), target_is_directory=True)
    return [b for b, spec in (head.get("pretrain") or {}).items() if spec and spec.get("source") == "pacs"]


def head_params(ws: Path) -> dict:
    import yaml

    if not (ws / "dvc.yaml").exists():
        raise SystemExit(f"domains: {ws}: no offline workspace; run `make offline` first")
    return yaml.safe_load(sh(ws, "git", "show", "HEAD:params.yaml"))


def carry(ws: Path, out: Path, name: str, domain: str) -> None:
    """A finished target's files into out/<domain>/, as publish writes them, with its overrides and
    sittings (experiments.carry): what publish needs of it once the workspace is gone. Commit
    them; `run` then skips the target and `publish` reads it there."""
    ref = experiments(ws)[name]
    t = load(domain, ref_text(ws, ref), f"experiment {name}", "run it again (python scripts/domains.py run)", name)
    X.carry(out / domain, t["files"], name, *record(X.recorded(ws / TIMING).get(name, {}), domain, ws))
    print(f"domains: {name}: carried to {shown(out / domain)}")


def record(entry: dict, domain: str, ws: Path) -> tuple[list[str], list[dict]]:
    """A target's -S overrides and sittings; a target run elsewhere (Slurm) had the plain overrides."""
    return X.record(entry, lambda: overrides(domain, X.without_sweeps(ws)))


def run(ws: Path, offline: Path, out: Path, targets: list[str] | None, data: Path | None = None,
        sources: Path | None = None) -> None:  # fmt: skip
    X.prepared(ws, PROJECT, data, sources, "domains")
    head = head_params(ws)
    names = plan(P.target_domain(head), targets, offline)
    dropped, local = X.without_sweeps(ws), link_local(ws, head, names, data, sources)
    run_all(ws, {name: overrides(domain, dropped, local) for name, domain in names.items()}, ws / TIMING, "domains",
            folder=lambda name: out / names[name], carry=lambda name: carry(ws, out, name, names[name]),
            shown=shown)  # fmt: skip
    print("domains: every experiment is done; `python scripts/domains.py publish` publishes them")


# --- what a target's row is made of ----------------------------------------------------------------


def strategy(part: P.Part) -> tuple[str, str] | None:
    """(subset, scratch | head-only | fine-tuning) of a part that is a column of the table; None
    for a sweep or a part from another backbone (ImageNet)."""
    if part.sweep:
        return None
    if part.init == "random" and part.trainable == "all":
        return part.subset, "scratch"
    if part.backbone is not None:
        return part.subset, "head-only" if part.trainable == "head" else "fine-tuning"
    return None


def columns(params: dict, where: str) -> tuple[dict[tuple[str, str], str], str]:
    """(column -> its part, the backbone the transfer parts start from) of a target's params."""
    found: dict[tuple[str, str], list[str]] = {}
    backbones = set()
    for name, part in P.parts(params).items():
        key = strategy(part)
        if key is not None:
            found.setdefault(key, []).append(name)
            if part.backbone is not None:
                backbones.add(part.backbone)
    wrong = [f"{COLUMNS[k]}: {', '.join(found.get(k, [])) or 'none'}" for k in COLUMNS if len(found.get(k, [])) != 1]
    if wrong or len(backbones) != 1:
        raise SystemExit(
            f"domains: {where}: needs one part per column and one pretrained backbone; has {'; '.join(wrong) or 'them'}"
            f" and backbones {', '.join(sorted(backbones)) or 'none'}"
        )
    return {k: found[k][0] for k in COLUMNS}, backbones.pop()


def needed(cols: dict, backbone: str) -> list[str]:
    """Every file of a target that the publication copies and reads."""
    files = ["params.yaml", "dvc.lock", "details/data.json"]
    files += [f"{sub}/pretrain/{backbone}.json" for sub in ("metrics", "details")]
    for part in cols.values():
        files += [f"metrics/{part}.json", f"details/{part}.json", f"details/predictions/{part}.csv"]
    return files


def load(domain: str, text, origin: str, missing_hint: str, experiment: str | None = None) -> dict:
    """A target's files and what is read from them: {domain, from, experiment (its name, None
    for the publication), params, columns, backbone, files (path -> text), details, correct,
    pretrain, data}; refused in one line where a file is missing or the files are of another
    target."""
    import yaml

    raw = text("params.yaml")
    if raw is None:
        raise SystemExit(f"domains: {origin}: no params.yaml; {missing_hint}")
    params = yaml.safe_load(raw)
    cols, backbone = columns(params, origin)
    files = {rel: text(rel) for rel in needed(cols, backbone)}
    missing = [rel for rel, t in files.items() if t is None]
    if missing:
        raise SystemExit(f"domains: {origin}: {', '.join(missing)} missing; {missing_hint}")
    from tlstudy.stages.report.inputs import seed_correct_text, target_test

    data = json.loads(files["details/data.json"])
    pretrain = json.loads(files[f"details/pretrain/{backbone}.json"])
    said = {"data.domain": P.target_domain(params), "details/data.json": data.get("domain", "cartoon"),
            f"details/pretrain/{backbone}.json": target_test(pretrain)["domain"]}  # fmt: skip
    if set(said.values()) != {domain}:
        raise SystemExit(
            f"domains: {origin}: is not target {domain}: " + ", ".join(f"{k} says {v}" for k, v in said.items())
        )
    return {
        "domain": domain, "from": origin, "experiment": experiment, "params": params, "columns": cols,
        "backbone": backbone, "files": files, "data": data, "pretrain": pretrain,
        "details": {p: json.loads(files[f"details/{p}.json"]) for p in cols.values()},
        "correct": {p: seed_correct_text(files[f"details/predictions/{p}.csv"]) for p in cols.values()},
    }  # fmt: skip


def read_publication(offline: Path) -> dict:
    """The baseline's row from the offline publication's files; refused, saying to republish, where
    the publication has no per-image predictions (it predates them)."""
    import yaml

    if not (offline / "params.yaml").is_file():
        raise SystemExit(f"domains: {offline}: no params.yaml; not a profile's publication (make offline makes one)")
    params = yaml.safe_load((offline / "params.yaml").read_text())
    cols, _ = columns(params, shown(offline))
    for part in cols.values():
        path = offline / "details/predictions" / f"{part}.csv"
        if not path.is_file():
            raise SystemExit(
                f"domains: {shown(path)}: missing; the offline publication predates per-image predictions, which the "
                "tests against scratch need: republish the offline profile first (make offline), then publish again"
            )
    hint = "republish the offline profile (make offline)"
    return load(P.target_domain(params), folder_text(offline), shown(offline), hint)


# --- the numbers -------------------------------------------------------------------------------------


def pick(details: dict) -> tuple[str, dict]:
    """A part's selected optimizer group and its figures (headline.selected: by validation accuracy)."""
    from tlstudy.stages.report.headline import selected_group

    group = selected_group(details)
    if group is None:
        raise SystemExit("domains: a part's details hold no optimizer with a validation accuracy")
    return group, details[group]


def numbers(targets: dict[str, dict]) -> dict:
    """domains.json: per target its parts' selected models, the backbone on the target with no
    training on it, the majority class's rate and the ceilings; the family of tests."""
    from tlstudy.stages.report.figures import majority_rate
    from tlstudy.stages.report.inputs import target_test
    from tlstudy.stages.report.verdicts import difference, seed_picks

    out, tests = {}, {}
    for domain, t in targets.items():
        parts = {}
        for key, part in t["columns"].items():
            group, m = pick(t["details"][part])
            parts[part] = {
                "column": COLUMNS[key], "subset": key[0], "optimizer": group,
                **{k: m.get(k) for k in ("test_acc", "test_acc_lo", "test_acc_hi", "interval", "n_test")},
                "n_seeds": len(seed_picks(m)),
            }  # fmt: skip
            if key[1] == "scratch":
                continue
            base = t["columns"][(key[0], "scratch")]
            d = difference(t["correct"][part].get(group), t["correct"][base].get(parts[base]["optimizer"]))
            if d:
                tests[f"{domain}: {part}"] = {**d, "target": domain, "part": part, "baseline": base,
                                              "groups": [group, parts[base]["optimizer"]]}  # fmt: skip
        reference = t["files"][f"details/predictions/{t['columns'][('full', 'scratch')]}.csv"]
        labels = [r["label"] for r in csv.DictReader(io.StringIO(reference))]
        no_training = target_test(t["pretrain"])
        out[domain] = {
            "from": t["from"], "experiment": t["experiment"],
            "split": t["data"].get("split"), "split_how": t["data"].get("how"),
            "image_size": t["params"]["data"]["image_size"], "backbone": t["backbone"],
            "sources": P.source_domains(t["params"]),
            "no_target_training": {**{k: no_training[k] for k in ("acc", "lo", "hi", "n")},
                                   "interval": "95 % Wilson interval over test images (one pretraining run)"},
            "majority_class": round(majority_rate(labels), 6), "parts": parts,
            "ceilings": {c["name"]: dict(zip(("acc", "se"), c["acc"][domain])) for c in CEILINGS},
        }  # fmt: skip
    family = findings.judge(FAMILY, tests) if tests else None
    for name, test in (family or {}).get("tests", {}).items():
        out[test["target"]]["parts"][test["part"]]["vs_scratch"] = name
    ceilings = [{k: c[k] for k in ("name", "source", "url", "paper", "setting")} for c in CEILINGS]
    return {"targets": out, "family": family, "ceilings": ceilings}


# --- the table and the figure ------------------------------------------------------------------------


def _cell(m: dict) -> str:
    from tlstudy.training import optimizers

    lo, hi = m.get("test_acc_lo"), m.get("test_acc_hi")
    spread = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    return f"{100 * m['test_acc']:.1f}{spread} {optimizers.label(m['optimizer'])}"


def _versus(m: dict, family: dict | None) -> str:
    """`; +2.1 [−0.4, +4.6] pp; p = 0.08, adj. 0.24; no difference shown`, or nothing for a part
    with no test (scratch, or no shared seed)."""
    from tlstudy.stages.report.tables import test_cell

    name = m.get("vs_scratch")
    return f"; {test_cell(family['tests'][name])}" if name else ""


def caption(numbers: dict) -> str:
    targets = numbers["targets"]
    family = numbers["family"]
    sizes = sorted({t["image_size"] for t in targets.values()})
    published = ", ".join(d for d, t in targets.items() if t["experiment"] is None)
    origin = (
        f"{published}: the offline publication; the others: DVC experiments of its workspace. " if published else ""
    )
    m = f" (m = {family['m']})" if family else ""
    from tlstudy.stages.report.tables import prose

    return (
        prose(
            "Test accuracy (%) with each PACS domain as the target: each part's selected model (the optimizer with the "
            "higher validation accuracy, as in `headline.json`), mean over seeds [95 % interval over test images and "
            "seeds, bootstrap]. Transfer parts: then the difference from the same target's scratch model on the same "
            "subset, in points [95 % interval], its p, its p adjusted with Holm's method in the family "
            f'"{FAMILY}"{m}, and the rule\'s verdict (docs/statistics.md). Our backbone: a ResNet-18 pretrained here '
            "from random init on the three other domains, one pretraining run per target, no ImageNet; images at "
            f'{", ".join(str(s) for s in sizes)} px. "no training on the target": that backbone\'s 7-way head on the '
            "target's test images [Wilson 95 % interval]. "
            + origin
            + f"Ceilings ({DOMAINBED['name']}, {DOMAINBED['paper']}; {DOMAINBED['source']}: mean ± standard error; "
            f"{DEEPDG['name']}, {DEEPDG['paper']}; {DEEPDG['source']}: one number), not comparisons any test here "
            "makes. They differ in the weights (ImageNet), the image size (224 px), DomainBed's also in the backbone "
            "(ResNet-50), the model-selection rule (validation images of the training domains) and the task: "
            "leave-one-domain-out training on all three other domains with no label of the target seen, where ours "
            "trains on labelled images of the target after pretraining on the other three."
        )
        + "\n"
    )


def _ceiling(c: dict) -> str:
    return f"{c['acc']:g}" + (f" ± {c['se']:.1f}" if c["se"] is not None else "")


def table(numbers: dict) -> str:
    """summary.md: a row per target, a column per strategy, the no-training column and one per ceiling."""
    from tlstudy.stages.report.tables import DASH, md_table

    family = numbers["family"]
    rows = []
    for domain, t in numbers["targets"].items():
        by_column = {m["column"]: m for m in t["parts"].values()}
        nt = t["no_target_training"]
        source = " (offline publication)" if t["experiment"] is None else ""
        rows.append([
            f"{domain}{source}", t["split"] or DASH,
            f"{100 * nt['acc']:.1f} [{100 * nt['lo']:.1f}, {100 * nt['hi']:.1f}]",
            *(_cell(by_column[c]) + _versus(by_column[c], family) for c in COLUMNS.values()),
            *(_ceiling(t["ceilings"][c["name"]]) for c in CEILINGS),
        ])  # fmt: skip
    head = [
        "target",
        "split",
        "no training on the target",
        *COLUMNS.values(),
        *(f"ceiling: {c['name']}" for c in CEILINGS),
    ]
    return caption(numbers) + "\n" + md_table(head, rows) + "\n"


def finding(numbers: dict) -> str:
    """findings.md: the family's verdicts in one line, every word from the rule, as the offline
    report's findings.md gives its families (report.document.findings_text); the README quotes it."""
    from tlstudy.stages.report.document import findings_text

    return findings_text({FAMILY: numbers["family"]} if numbers["family"] else {})


def plot(numbers: dict):
    """Per target a panel: each strategy's selected model with its interval, the backbone with
    no training on the target, the ceilings as lines (DomainBed's with its standard error as a
    band), chance and the majority class as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from tlstudy.stages.report.figures import CHANCE, INTERVAL_STYLES, interval_label

    targets = numbers["targets"]
    labels = ["no training on the target", *COLUMNS.values()]
    fig, axes = plt.subplots(1, len(targets), figsize=(3.4 * len(targets) + 1.8, 4.6), sharey=True, squeeze=False)
    kinds: dict[str, object] = {}
    for ax, (domain, t) in zip(axes[0], targets.items()):
        nt = t["no_target_training"]
        points = [({"test_acc": nt["acc"], "test_acc_lo": nt["lo"], "test_acc_hi": nt["hi"],
                    "interval": nt["interval"]}, "0.35", "D")]  # fmt: skip
        by_column = {m["column"]: m for m in t["parts"].values()}
        for column in COLUMNS.values():
            colour = "tab:orange" if column.startswith("few-shot") else "tab:blue"
            points.append((by_column[column], colour, "s" if column.endswith("scratch") else "o"))
        for i, (m, colour, marker) in enumerate(points):
            y, x = len(labels) - 1 - i, 100 * m["test_acc"]
            kind = interval_label(m.get("interval"))
            style = kinds.setdefault(kind, INTERVAL_STYLES[len(kinds) % len(INTERVAL_STYLES)])
            err = [[max(0.0, x - 100 * m["test_acc_lo"])], [max(0.0, 100 * m["test_acc_hi"] - x)]]
            bars = ax.errorbar([x], [y], xerr=err, fmt=marker, color=colour, ms=5, capsize=2, lw=1.2)
            for collection in bars.lines[2]:
                collection.set_linestyle(style)
        for c, style in zip(CEILINGS, CEILING_STYLES):
            acc, se = t["ceilings"][c["name"]]["acc"], t["ceilings"][c["name"]]["se"]
            if se is not None:
                ax.axvspan(acc - se, acc + se, color=style["color"], alpha=0.15, lw=0)
            ax.axvline(acc, lw=1.2, **style)
        ax.axvline(CHANCE, color="0.5", ls=":", lw=1)
        ax.axvline(100 * t["majority_class"], color="0.15", ls="-.", lw=1)
        ax.set_xlim(0, 100)
        ax.set_title(f"target {domain}" + ("\n(offline publication)" if t["experiment"] is None else ""),
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("test accuracy (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), list(reversed(labels)), fontsize=8)
    axes[0][0].set_ylim(-0.7, len(labels) - 0.3)
    handles = [
        Line2D([], [], color="tab:blue", marker="o", ls="none", label="full subset"),
        Line2D([], [], color="tab:orange", marker="o", ls="none", label="few-shot subset (squares: scratch)"),
        Line2D([], [], color="0.35", marker="D", ls="none", label="backbone alone, no training on the target"),
        *(Line2D([], [], lw=1.2, label=f"ceiling: {c['name']} ({c['backbone']}, ImageNet, 224 px)", **style)
          for c, style in zip(CEILINGS, CEILING_STYLES)),
        Line2D([], [], color="0.5", ls=":", lw=1, label="chance (1 in 7)"),
        Line2D([], [], color="0.15", ls="-.", lw=1, label="majority class of the target's test images"),
        *(Line2D([], [], color="0.3", ls=style, lw=1.2, label=kind) for kind, style in kinds.items()),
    ]  # fmt: skip
    ncol = min(3, len(targets))  # a column of the legend needs about 3.4 in, a panel's width
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(
        "Each PACS domain as the target: a ResNet-18 pretrained here on the three others (no ImageNet),\nthen "
        "trained on the target; each part's model selected by its validation accuracy", fontsize=9,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.045 * -(-len(handles) // ncol), 1, 1))
    return fig


# --- the publication ---------------------------------------------------------------------------------


def timing(ws: Path, offline: Path, ran: list[str], names: dict[str, str], baseline: str, entries: dict) -> dict:
    """timing.json: per target CPU and wall seconds and the sittings (`entries`: the records of
    `recorded`, a carried target's from its folder); the baseline's from the offline
    publication's own record (wall time only)."""
    from tlstudy.tools.machine import machine, summary

    targets = {}
    pub = json.loads((offline / "timing.json").read_text()) if (offline / "timing.json").is_file() else {}
    invocations = pub.get("invocations", [])
    targets[baseline] = {
        "from": f"{shown(offline)}/timing.json", "sittings": len(invocations),
        "wall_s": round(sum(i["wall_s"] for i in invocations), 1), "cpu_s": None,
        "note": "the offline profile records wall time only; its stages include the two augmentation sweeps",
    }  # fmt: skip
    for name in ran:
        if name in entries:
            targets[names[name]] = {"from": f"experiment {name}", **totals(entries[name]),
                                    "by_sitting": entries[name]["sittings"]}  # fmt: skip
        else:
            targets[names[name]] = {"from": f"experiment {name}", "sittings": 0, "wall_s": None, "cpu_s": None,
                                    "note": f"not run by this script ({shown(ws / TIMING)} has no entry)"}  # fmt: skip
    timed = [t for d, t in targets.items() if d != baseline and t["cpu_s"] is not None]
    details = machine()
    return {
        "machine": summary(details), "machine_details": details,
        "experiments_total": {k: round(sum(t[k] for t in timed), 1) for k in ("wall_s", "cpu_s")},
        "targets": {d: targets[d] for d in P.DOMAINS if d in targets},
    }  # fmt: skip


def publish(ws: Path, out: Path, offline: Path, targets: list[str] | None) -> None:
    baseline = read_publication(offline)
    names = plan(baseline["domain"], targets, offline)
    head = head_params(ws)
    if head != baseline["params"]:
        differ = sorted(k for k in set(head) | set(baseline["params"]) if head.get(k) != baseline["params"].get(k))
        raise SystemExit(
            f"domains: {shown(offline)}/params.yaml differs from the baseline's of {ws} in {', '.join(differ)}: "
            "the targets would not be the same study; publish the offline profile from this workspace first"
        )
    found = experiments(ws)
    refs = {n: found[n] for n in names if n in found}
    kept = {n: out / d for n, d in names.items() if n not in refs and X.carried(out / d)}
    missing = [n for n in names if n not in refs and n not in kept]
    if missing:
        raise SystemExit(f"domains: not run yet: {', '.join(missing)}; run `python scripts/domains.py run`")
    loaded = {baseline["domain"]: baseline}
    hint = "run it again (python scripts/domains.py run)"
    for name, ref in refs.items():
        loaded[names[name]] = load(names[name], ref_text(ws, ref), f"experiment {name}", hint, name)
    for name, folder in kept.items():
        # The same experiment as from its ref: its numbers say so; a refusal names the folder.
        again = f"it was carried to {shown(folder)}: remove that folder and {hint}"
        loaded[names[name]] = load(names[name], folder_text(folder), f"experiment {name}", again, name)
    loaded = {d: loaded[d] for d in P.DOMAINS if d in loaded}
    result = numbers(loaded)
    entries = X.recorded(ws / TIMING) | {name: X.carried(folder) for name, folder in kept.items()}
    spent = timing(ws, offline, [*refs, *kept], names, baseline["domain"], entries)
    figure = plot(result)
    # Everything is computed before the first file is written, into a folder beside `out` that
    # replaces it whole: a refusal or a kill leaves the last publication as it was, and no file of
    # a target published before but not now stays behind.
    staging = out.with_name(f".{out.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    for domain, t in loaded.items():
        for rel, text in t["files"].items():
            write_text(staging / domain / rel, text)
        if t["experiment"] is not None:
            X.write_record(staging / domain, t["experiment"], *record(entries.get(t["experiment"], {}), domain, ws))
    write_json(staging / "domains.json", result)
    write_text(staging / "summary.md", table(result))
    write_text(staging / "findings.md", finding(result))
    write_json(staging / "timing.json", spent)
    save_figure(figure, staging / "domains.png", dpi=110)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"domains: published {len(loaded)} targets to {out}")


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, WORKSPACE, OUT, "where run carries each target and publish writes")
    ap.add_argument("--offline", type=Path, default=OFFLINE, help="its publication (default: %(default)s)")
    ap.add_argument("--targets", nargs="+", choices=P.DOMAINS, help="default: every domain but the baseline's")
    ap.add_argument("--data", type=Path, help="run: the baseline domain's PACS folder, as `make offline` takes it")
    ap.add_argument(
        "--sources", type=Path, help="run: a folder of <domain>/<class>/<image> for the other domains (no download)"
    )
    args = ap.parse_args(argv)
    ws = args.workspace.resolve()
    if args.command == "run":
        run(ws, args.offline.resolve(), args.out.resolve(), args.targets, args.data, args.sources)
    else:
        publish(ws, args.out.resolve(), args.offline.resolve(), args.targets)


if __name__ == "__main__":
    main()
