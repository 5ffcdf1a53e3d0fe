"""The two sweep scripts end to end, on one baseline: a workspace of the offline profile's shape
(scratch parts, transfer parts from a backbone pretrained here, a sweep the experiments leave out)
on a tiny four-domain PACS-like archive served on 127.0.0.1, run and published as `make offline`
runs and publishes it, once for the module. A baseline is about twenty stage processes, each
importing PyTorch: built once, it is not the price of each script's test.

scripts/pretraining-budget.py first: two budgets (the baseline's 1 epoch, then 2 epochs of the
strong recipe), one seed; real `dvc exp run`s, the second killed mid-pretraining and run again,
each carried out of the workspace once done, then the publication, then both again, and a
publication from the carried folders alone. Its first budget is the baseline itself, so it runs
first, while the workspace still holds the baseline's outputs.

Then scripts/domains.py: sketch as a real `dvc exp run` killed mid-run and run again, then the
publication beside the offline row, then both again. Each test also runs alone on a fresh
baseline (`pytest -k`)."""

import csv
import hashlib
import io
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import PROJECT, at_rev, git, killed_once, load_script, show, tiny_overlay, tiny_workspace
from http_fixture import Server
from PIL import Image

from tlstudy import params as P
from tlstudy.data.pacs_rows import PACS_CLASSES
from tlstudy.lib import findings
from tlstudy.tools import profile

pytestmark = pytest.mark.slow
DOMAINS_SCRIPT = PROJECT / "scripts/domains.py"
BUDGET_SCRIPT = PROJECT / "scripts/pretraining-budget.py"
domains = load_script("domains")
budget_script = load_script("pretraining-budget")

PARTS = ["scratch", "classifier", "finetune", "fewshot_scratch", "fewshot_classifier", "fewshot_finetune"]

URL_PATH = "/pacs/train.parquet"
OFFICIAL_TEST = {"dog": 39, "elephant": 46, "giraffe": 35, "guitar": 14, "horse": 33, "house": 29, "person": 41}
SOURCE_PER_CLASS = 10  # art_painting, photo, sketch: as a target, 1 test image a class (data.test_fraction 0.1)
# cartoon's derived split draws the official number of test images per class, so it needs more.
CARTOON_EXTRA = 8
NAME = "target-sketch"
TRANSFER = ["classifier", "finetune", "fewshot_classifier", "fewshot_finetune"]


def jpeg(domain: str, cls: str, i: int) -> bytes:
    pixels = np.random.default_rng([P.DOMAINS.index(domain), PACS_CLASSES.index(cls), i]).integers(
        0, 256, (32, 32, 3), dtype=np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def archive() -> bytes:
    """PACS's parquet layout (image{bytes, path}, domain, label as the class's index), four domains."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        (d, c, i)
        for d in P.DOMAINS
        for c in PACS_CLASSES
        for i in range(OFFICIAL_TEST[c] + CARTOON_EXTRA if d == "cartoon" else SOURCE_PER_CLASS)
    ]
    image = pa.array(
        [{"bytes": jpeg(d, c, i), "path": f"/data/PACS/kfold/{d}/{c}/pic_{i:03d}.jpg"} for d, c, i in rows],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({"image": image, "domain": pa.array([d for d, _, _ in rows]),
                      "label": pa.array([PACS_CLASSES.index(c) for _, c, _ in rows], pa.int64())})  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def overlay(url: str, sha256: str) -> dict:
    """The offline profile's shape (scratch parts, transfer parts from the backbone pretrained
    here, a sweep the experiments leave out, both optimizers) on PACS-like data, at the demo's size."""
    transfer = {
        "classifier": {"subset": "full", "init": "pacs_sources", "trainable": "head"},
        "finetune": {"subset": "full", "init": "pacs_sources", "trainable": "all"},
        "fewshot_classifier": {"subset": "fewshot", "init": "pacs_sources", "trainable": "head"},
        "fewshot_finetune": {"subset": "fewshot", "init": "pacs_sources", "trainable": "all"},
        "augment": {"subset": "fewshot", "init": "pacs_sources", "trainable": "all", "optimizer": ["sgd"],
                    "augment": ["none", "hflip"]},
    }  # fmt: skip
    return tiny_overlay(
        keep=("scratch", "fewshot_scratch", "pacs_sources"),
        optimizer=["sgd", "adam"],
        data={"source": "pacs", "url": url, "sha256": sha256},
        pretrain={"pacs_sources": {"source": "pacs", "epochs": 1, "batch_size": 16, "lr": 0.01}},
        transfer=transfer,
    )


def run_script(path, *args) -> str:
    r = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def folders(root) -> None:
    """The archive's images as folders, <domain>/<class>/<image>, as a machine with PACS on disk has them."""
    for d in P.DOMAINS:
        for c in PACS_CLASSES:
            for i in range(OFFICIAL_TEST[c] + CARTOON_EXTRA if d == "cartoon" else SOURCE_PER_CLASS):
                path = root / d / c / f"pic_{i:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg(d, c, i))


def target_run(ws, pub, local, out) -> list:
    """scripts/domains.py's arguments that run sketch from the folders at `local`."""
    return ["run", "--workspace", ws, "--offline", pub, "--targets", "sketch", "--sources", local, "--out", out]


def killed_once_inside_a_transfer_stage(ws, pub, local, out) -> str:
    """`run`, killed once the experiment's first transfer stage has begun; what it printed."""
    argv = [sys.executable, str(DOMAINS_SCRIPT), *map(str, target_run(ws, pub, local, out))]
    return killed_once(argv, f"domains: {NAME}:", "Running stage 'transfer@")


def files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def accuracy(text: str, group: str) -> float:
    rows = list(csv.DictReader(io.StringIO(text)))
    return sum(r[f"{group}:seed0"] == r["label"] for r in rows) / len(rows)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The baseline workspace, run and published as the offline profile is (`pub`), and the
    archive's images as folders on disk (`pacs`), as a machine with PACS has them."""
    root = tmp_path_factory.mktemp("baseline")
    blob = archive()
    with Server() as server:
        server.files[URL_PATH] = blob
        ws = tiny_workspace(root / "ws", overlay(server.url(URL_PATH), hashlib.sha256(blob).hexdigest()))
        recorded = {"invocations": [{"wall_s": 12.5, "stages_run": 20}], "stages": {}}
        pub = profile.publish(ws, root / "project", "offline", recorded, "test")
    folders(root / "pacs")
    return SimpleNamespace(ws=ws, pub=pub, pacs=root / "pacs")


def experiments(ws) -> dict[str, str]:
    """name -> ref of the workspace's experiments (refs/exps/<2>/<38 of the baseline>/<name>; DVC's
    own refs/exps/exec/… aside)."""
    refs = git(ws, "for-each-ref", "--format=%(refname)", "refs/exps/").split()
    return {r.split("/")[4]: r for r in refs if len(r.split("/")) == 5 and "exec" not in r.split("/")}


# --- the pretraining-budget sweep ---------------------------------------------------------------------

PLAN = ["--epochs", "1", "--strong", "2"]
NAMES = ["pretrain-001ep", "pretrain-002ep-strong"]


def budget(*args) -> str:
    return run_script(BUDGET_SCRIPT, *args)


def killed_once_inside_the_strong_pretraining(ws, carried) -> str:
    """`run`, killed once the strong experiment's pretraining stage has begun; what it printed."""
    argv = [sys.executable, str(BUDGET_SCRIPT), "run", "--workspace", str(ws), "--carried", str(carried), *PLAN]
    return killed_once(argv, f"budget: {NAMES[1]}:", "pretrain pacs_sources epoch 1/")


def test_budgets_run_as_experiments_and_publish_the_same_files_twice(baseline, tmp_path):
    ws = baseline.ws
    out, carried = tmp_path / "published", tmp_path / "carried"
    where = ["--workspace", str(ws), "--carried", str(carried), *PLAN]

    killed = killed_once_inside_the_strong_pretraining(ws, carried)
    # The first experiment was carried out as soon as it finished; the killed one was not.
    assert f"budget: {NAMES[0]}: carried to {carried / NAMES[0]}" in killed
    assert [p.name for p in carried.iterdir()] == [NAMES[0]]
    log = budget("run", *where)
    exps = experiments(ws)
    assert sorted(exps) == NAMES
    # The budget equal to the baseline's is the baseline's backbone, kept rather than retrained;
    # the strong one pretrains, and after the kill its rerun goes on from there.
    first_budget, strong = killed.split(f"budget: {NAMES[1]}:", 1)
    assert "Running stage 'pretrain@pacs_sources'" not in first_budget
    assert "Running stage 'pretrain@pacs_sources'" in strong
    assert f"budget: {NAMES[0]}: carried before, in {carried / NAMES[0]}; kept" in log
    assert f"budget: {NAMES[1]}: exp run" in log and f"budget: {NAMES[1]}: carried to" in log
    record = json.loads((carried / NAMES[1] / "sittings.json").read_text())
    assert record["experiment"] == NAMES[1] and [s["finished"] for s in record["sittings"]] == [False, True]
    for name in NAMES:  # as committed with the experiment, byte for byte
        for rel in ("params.yaml", "dvc.lock", "details/predictions/finetune.csv"):
            assert (carried / name / rel).read_text() == show(ws, exps[name], rel)
    for name, epochs, variant in [(NAMES[0], 1, "hflip_rot10"), (NAMES[1], 2, "strong")]:
        params = yaml.safe_load(show(ws, exps[name], "params.yaml"))
        assert (
            params["pretrain"]["pacs_sources"]["epochs"] == epochs
            and params["pretrain"]["pacs_sources"]["augment"] == variant
        )
        assert "augment" not in params["transfer"] and set(TRANSFER) <= set(params["transfer"])
    assert yaml.safe_load((ws / "params.yaml").read_text()) == yaml.safe_load(show(ws, "HEAD", "params.yaml")), (
        "run leaves the workspace on the baseline's params"
    )

    budget("publish", "--out", str(out), *where)
    assert not carried.exists(), "publish removes the carried folders it published"
    numbers = json.loads((out / "budget.json").read_text())
    assert list(numbers) == NAMES and [numbers[n]["epochs"] for n in NAMES] == [1, 2]
    for name in NAMES:
        assert 1 <= numbers[name]["pretrain"]["epoch"] <= numbers[name]["epochs"]  # its best epoch by validation
        for part in TRANSFER:
            for opt in ("sgd", "adam"):
                m = numbers[name][part][opt]
                assert m["test_acc_lo"] <= m["test_acc"] <= m["test_acc_hi"]
                assert m == {k: at_rev(ws, exps[name], f"details/{part}.json")[opt][k] for k in m}
        # Each transfer part against scratch, from the per-image predictions published beside:
        # the selected models' accuracy difference (one seed: a bootstrap over the test images).
        for part, t in numbers[name]["vs_scratch"].items():
            scratch = "fewshot_scratch" if part.startswith("fewshot") else "scratch"
            assert {"diff", "lo", "hi", "p", "p_adjusted", "verdict", "family"} <= set(t) and t["n_seeds"] == 1
            assert t["family"] == f"{part} vs {scratch} across budgets" and t["m"] == len(NAMES)
            assert t["lo"] <= t["diff"] <= t["hi"] and t["p"] <= t["p_adjusted"] <= 1
            assert t["verdict"] == findings.verdict(t["diff"], t["lo"], t["hi"], t["p_adjusted"])
            right = {}
            for p, group in zip((part, scratch), t["groups"]):
                rows = list(csv.DictReader(io.StringIO((out / name / f"details/predictions/{p}.csv").read_text())))
                right[p] = [r[f"{group}:seed0"] == r["label"] for r in rows]
            assert t["diff"] == pytest.approx((sum(right[part]) - sum(right[scratch])) / len(right[part]))
        for part in [*TRANSFER, "scratch", "fewshot_scratch"]:
            path = f"details/predictions/{part}.csv"
            assert (out / name / path).read_text() == show(ws, exps[name], path)
        # scratch does not depend on the budget: every experiment holds the baseline's.
        assert numbers[name]["scratch"] == numbers[NAMES[0]]["scratch"]
        assert at_rev(ws, exps[name], "metrics/scratch.json") == at_rev(ws, "HEAD", "metrics/scratch.json")
        folder = out / name
        assert {p.name for p in folder.iterdir()} == {
            "overrides.json", "params.yaml", "dvc.lock", "headline.json", "metrics", "details"}  # fmt: skip
        assert json.loads((folder / "metrics/pretrain/pacs_sources.json").read_text()) == at_rev(
            ws, exps[name], "metrics/pretrain/pacs_sources.json"
        )
    # The 1-epoch budget is the baseline: same backbone, same transfer results.
    assert at_rev(ws, exps[NAMES[0]], "metrics/finetune.json") == at_rev(ws, "HEAD", "metrics/finetune.json")
    # Each part's family: its tests the budgets, Holm-adjusted together.
    for part in TRANSFER:
        tests = {n: numbers[n]["vs_scratch"][part] for n in NAMES}
        holm = findings.adjust(part, {n: t["p"] for n, t in tests.items()})["tests"]
        assert {n: t["p_adjusted"] for n, t in tests.items()} == {n: holm[n]["p_adjusted"] for n in NAMES}
    # summary.md: a row per budget, then scratch and the study's ImageNet values; then each test's
    # words as the rule gives them for the published numbers.
    _, accuracies, sentence, tests = (out / "summary.md").read_text().split("\n\n")
    first_cells = [r.split(" | ")[0].removeprefix("| ") for r in accuracies.splitlines()[2:]]
    assert first_cells == [
        "1 epoch",
        "2 epochs, strong colour augmentation",
        "none: scratch (fewshot_scratch)",
        "ImageNet (the study)",
    ]
    assert "One family per transfer part, its tests the 2 budgets" in sentence and "Holm's method" in sentence
    test_rows = [r.removeprefix("| ").removesuffix(" |").split(" | ") for r in tests.splitlines()[2:]]
    assert [r[0] for r in test_rows] == first_cells[:2]
    for row, name in zip(test_rows, NAMES):
        words = [cell.rsplit("; ", 1)[1] for cell in row[1:]]
        t = numbers[name]["vs_scratch"]
        assert words == [findings.verdict(t[p]["diff"], t[p]["lo"], t[p]["hi"], t[p]["p_adjusted"]) for p in TRANSFER]
    assert (out / "findings.md").read_text() == budget_script.finding(numbers)
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["experiments"]) == set(NAMES) and all(t["wall_s"] > 0 for t in timing["experiments"].values())
    # The killed sitting kept what it measured; the second finished the experiment.
    sittings = timing["experiments"][NAMES[1]]["by_sitting"]
    assert [s["finished"] for s in sittings] == [False, True] and sittings[0]["wall_s"] > 0
    assert timing["total"]["wall_s"] == round(sum(t["wall_s"] for t in timing["experiments"].values()), 1)
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = files(out)

    # Again: nothing re-runs (each experiment is carried once more), and the publication is the
    # same bytes; then with the workspace's experiments gone, from the carried folders alone.
    again = budget("run", *where)
    assert again.count("done before; kept") == 2 and "Running stage" not in again
    budget("publish", "--out", str(out), *where)
    assert files(out) == first
    budget("run", *where)
    for ref in exps.values():
        git(ws, "update-ref", "-d", ref)
    (ws / "work/budget-timing.json").unlink()  # the sittings come from the carried folders
    budget("publish", "--out", str(out), *where)
    assert files(out) == first and not carried.exists()


# --- each PACS domain as the target ---------------------------------------------------------------


def test_a_target_runs_as_an_experiment_and_publishes_beside_the_offline_row(baseline, tmp_path):
    # The baseline's row is the workspace published as `make offline` publishes it; the target and
    # its sources come from folders on disk, as `make domains` gives them: no download.
    ws, pub, pacs, out = baseline.ws, baseline.pub, baseline.pacs, tmp_path / "published"
    killed = killed_once_inside_a_transfer_stage(ws, pub, pacs, out)
    assert not (out / "sketch").exists(), "a target is carried out of the workspace only once it is done"
    log = run_script(DOMAINS_SCRIPT, *target_run(ws, pub, pacs, out))
    assert f"domains: {NAME}: carried to {out / 'sketch'}" in log
    carried = json.loads((out / "sketch/sittings.json").read_text())
    assert carried["experiment"] == NAME and [s["finished"] for s in carried["sittings"]] == [False, True]

    exps = experiments(ws)
    assert [n for n in exps if n.startswith("target-")] == [NAME]
    ref = exps[NAME]
    # The first sitting fetched sketch and pretrained on the other three; the second kept that.
    for stage in ("fetch", "pretrain@pacs_sources"):
        assert f"Running stage '{stage}'" in killed and f"Running stage '{stage}'" not in log, stage
    said = ["data.domain=sketch", "data.source=local", "data.path=work/pacs-local/sketch",
            "pretrain.pacs_sources.source=local", "pretrain.pacs_sources.path=work/pacs-local",
            "~transfer.augment"]  # fmt: skip
    assert f"domains: {NAME}: exp run -n {NAME} {' '.join(f'-S {o}' for o in said)}" in log
    params = yaml.safe_load(show(ws, ref, "params.yaml"))
    assert params["data"]["domain"] == "sketch" and sorted(params["transfer"]) == sorted(TRANSFER)
    assert (params["data"]["source"], params["pretrain"]["pacs_sources"]["source"]) == ("local", "local")
    assert yaml.safe_load((ws / "params.yaml").read_text())["data"]["domain"] == "cartoon", "back to the baseline's"
    data = at_rev(ws, ref, "details/data.json")
    assert (data["domain"], data["split"], data["seed"]) == ("sketch", "derived", 0)
    backbone = at_rev(ws, ref, "details/pretrain/pacs_sources.json")
    assert backbone["target"] == "sketch" and backbone["domains"] == ["art_painting", "cartoon", "photo"]

    run_script(DOMAINS_SCRIPT, "publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    numbers = json.loads((out / "domains.json").read_text())
    assert list(numbers["targets"]) == ["cartoon", "sketch"]
    assert [t["experiment"] for t in numbers["targets"].values()] == [None, NAME]
    # cartoon is the publication's own numbers, sketch the experiment's.
    for domain, read in (("cartoon", lambda rel: json.loads((pub / rel).read_text())),
                         ("sketch", lambda rel: at_rev(ws, ref, rel))):  # fmt: skip
        for part, m in numbers["targets"][domain]["parts"].items():
            assert m["test_acc"] == read(f"details/{part}.json")[m["optimizer"]]["test_acc"]
        assert numbers["targets"][domain]["no_target_training"]["acc"] == read(
            "details/pretrain/pacs_sources.json")["target_test_acc"]  # fmt: skip
    family = numbers["family"]
    assert family["family"] == domains.FAMILY and family["m"] == 8 and set(family["tests"]) == {
        f"{d}: {p}" for d in ("cartoon", "sketch") for p in TRANSFER}  # fmt: skip
    for name, t in family["tests"].items():
        domain = name.split(":")[0]
        preds = (out / domain / "details/predictions").joinpath
        # One seed: the difference is that of the two models' accuracies on the same images.
        ours, base = t["groups"]
        expected = accuracy(preds(f"{t['part']}.csv").read_text(), ours) - accuracy(
            preds(f"{t['baseline']}.csv").read_text(), base)  # fmt: skip
        assert t["diff"] == pytest.approx(expected) and t["p_adjusted"] >= t["p"]
        assert t["verdict"] in findings.VERDICTS
    # The files a reader redoes the statistics from, as the publication and the experiment hold them.
    for part in PARTS:
        rel = f"details/predictions/{part}.csv"
        assert (out / "cartoon" / rel).read_bytes() == (pub / rel).read_bytes()
        shown = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=ws, capture_output=True, check=True).stdout
        assert (out / "sketch" / rel).read_bytes() == shown
    assert json.loads((out / "sketch/overrides.json").read_text()) == said
    assert not (out / "cartoon/overrides.json").exists()
    rows = [r for r in (out / "summary.md").read_text().splitlines() if r.startswith("| ")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows[1:]] == ["cartoon (offline publication)", "sketch"]
    assert rows[-1].endswith("| 79.3 ± 1.0 | 76.94 |")
    spent = json.loads((out / "timing.json").read_text())
    sketch = spent["targets"]["sketch"]
    # The killed sitting kept what it measured; the second finished the experiment.
    assert [s["finished"] for s in sketch["by_sitting"]] == [False, True] and sketch["sittings"] == 2
    assert sketch["cpu_s"] > 0 and spent["experiments_total"]["cpu_s"] == sketch["cpu_s"]
    assert (spent["targets"]["cartoon"]["wall_s"], spent["targets"]["cartoon"]["sittings"]) == (12.5, 1)
    assert (out / "domains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "findings.md").read_text() == domains.finding(numbers)
    first = files(out)

    # Again: nothing re-runs, and the publication is the same bytes.
    again = run_script(DOMAINS_SCRIPT, *target_run(ws, pub, pacs, out))
    assert f"domains: {NAME}: carried before, in {out / 'sketch'}; kept" in again and "Running stage" not in again
    (out / "photo/details").mkdir(parents=True)
    (out / "photo/details/data.json").write_text("{}")  # a target published before and not now: replaced with the rest
    run_script(DOMAINS_SCRIPT, "publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    assert files(out) == first
    # The workspace's experiment gone (a session ended, a fresh checkout): publish reads the carried folder.
    git(ws, "update-ref", "-d", ref)
    run_script(DOMAINS_SCRIPT, "publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    assert files(out) == first
