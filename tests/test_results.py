"""The published results: they are the output of the profile as it is declared now, and the README
quotes them as they are (a stale or hand-edited result fails here)."""

import functools
import json

import pytest
import yaml
from conftest import PROJECT

from tlstudy.profile import profile_params

RESULTS = PROJECT / "results"
# A profile's published results: results/<profile>/ beside profiles/<profile>.yaml.
PUBLISHED = sorted(p.name for p in RESULTS.iterdir() if (PROJECT / "profiles" / f"{p.name}.yaml").exists())


def stale_sources(lock: dict) -> list[str]:
    """The src/ files a lock's stages depended on that differ from src/ now, with the stage."""
    import hashlib

    return sorted(
        {
            f"{dep['path']} ({stage})"
            for stage, entry in lock.items()
            for dep in entry.get("deps", [])
            if dep["path"].startswith("src/")
            and hashlib.md5((PROJECT / dep["path"]).read_bytes()).hexdigest() != dep["md5"]
        }
    )


def test_the_offline_profile_is_published():
    assert "offline" in PUBLISHED


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_params_are_the_profiles(name):
    published = yaml.safe_load((PROJECT / "results" / name / "params.yaml").read_text())
    assert published == profile_params(PROJECT, name), f"results/{name} is stale: re-run its profile"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_lock_ran_every_stage_on_those_params(name):
    folder = PROJECT / "results" / name
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((folder / "params.yaml").read_text())
    parts = [*params["parts"], *params["transfer"]]
    expected = {"inspect", "fetch", "stats", "report"} | {f"pretrain@{b}" for b in params["pretrain"]}
    expected |= {f"train@{p}" for p in params["parts"]} | {f"evaluate@{p}" for p in params["parts"]}
    expected |= {f"transfer@{p}" for p in params["transfer"]} | {f"evaluate_transfer@{p}" for p in params["transfer"]}
    assert set(lock) == expected
    assert {p for p in parts if (folder / "metrics" / f"{p}.json").exists()} == set(parts)
    lr = lock["train@scratch"]["params"]["params.yaml"]["lr"]
    assert lr == params["lr"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_readme_quotes_the_published_summary(name):
    summary = (PROJECT / "results" / name / "report" / "summary.md").read_text()
    assert summary in (PROJECT / "README.md").read_text(), f"README's results differ from results/{name}"
    timing = json.loads((PROJECT / "results" / name / "timing.json").read_text())
    assert timing["stage_total_s"] > 0 and timing["command"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_results_ran_the_code_as_it_is_now(name):
    """Every source file a published stage depended on is byte for byte the file in src/ now:
    results from older code fail here (re-run the profile; unchanged stages are skipped)."""
    stale = stale_sources(yaml.safe_load((PROJECT / "results" / name / "dvc.lock").read_text())["stages"])
    assert not stale, f"results/{name} ran other code than src/ now: {', '.join(stale)}"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_headline_is_the_published_metrics(name):
    """What `dvc metrics show` lists in this repository (results/<name>/headline.json, declared at
    the top of dvc.yaml) is the headline of the per-part files published beside it."""
    from tlstudy.report import headline

    folder = PROJECT / "results" / name
    assert json.loads((folder / "headline.json").read_text()) == headline.headline(folder / "metrics")


# results/pretraining-budget: scripts/pretraining-budget.py's experiments of the offline workspace.
BUDGET = RESULTS / "pretraining-budget"
STRONG = [
    ["RandomHorizontalFlip", {"p": 0.5}],
    ["RandomAffine", {"degrees": 10}],
    ["ColorJitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}],
    ["RandomGrayscale", {"p": 0.2}],
]


@functools.cache
def budget_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretraining_budget", PROJECT / "scripts/pretraining-budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_plan() -> dict:
    script = budget_script()
    return script.budgets(script.DEFAULT_EPOCHS, script.DEFAULT_STRONG)


def test_every_budget_is_published_with_its_params_lock_and_metrics():
    script, plan = budget_script(), default_plan()
    numbers = json.loads((BUDGET / "budget.json").read_text())
    assert list(numbers) == list(plan)
    for name, (epochs, _, _) in plan.items():
        folder = BUDGET / name
        assert numbers[name]["epochs"] == epochs
        for sub in ("metrics", "details"):
            for part in ["pretrain/pacs_sources", *script.PARTS]:
                assert (folder / sub / f"{part}.json").exists(), f"{folder / sub / part}.json is missing"
        for part in script.PARTS:
            details = json.loads((folder / "details" / f"{part}.json").read_text())
            assert numbers[name][part] == {o: {k: details[o][k] for k in numbers[name][part][o]} for o in details}
    assert (BUDGET / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # scratch does not depend on the budget; the strong experiment re-ran it (a new augmentations
    # param) and must have got the baseline's accuracies back.
    for part in ("scratch", "fewshot_scratch"):
        assert len({json.dumps(e[part], sort_keys=True) for e in numbers.values()}) == 1, part


def test_each_budget_ran_the_offline_profile_with_only_its_overrides():
    offline = profile_params(PROJECT, "offline")
    for name, (epochs, recipe, _) in default_plan().items():
        params = yaml.safe_load((BUDGET / name / "params.yaml").read_text())
        source = params["pretrain"]["pacs_sources"]
        assert source["epochs"] == epochs
        if recipe == "default recipe":
            assert source["augment"] == offline["pretrain"]["pacs_sources"]["augment"]
        else:
            assert source["augment"] == "strong" and params["augmentations"]["strong"] == STRONG
        # Everything else is the offline profile's, less the two augmentation sweeps.
        expected = json.loads(json.dumps(offline))
        for key in ("epochs", "augment"):
            del expected["pretrain"]["pacs_sources"][key], source[key]
        params["augmentations"].pop("strong", None)
        sweeps = {p for p, part in offline["transfer"].items() if part and part.get("augment")}
        assert sweeps and not sweeps & set(params["transfer"])
        expected["transfer"] = {p: v for p, v in expected["transfer"].items() if p not in sweeps}
        assert params == expected, f"results/pretraining-budget/{name} is stale: re-run the sweep"


@pytest.mark.parametrize("name", list(default_plan()))
def test_each_budget_ran_the_code_as_it_is_now(name):
    lock = yaml.safe_load((BUDGET / name / "dvc.lock").read_text())["stages"]
    assert {"pretrain@pacs_sources", "transfer@finetune", "report"} <= set(lock)
    stale = stale_sources(lock)
    assert not stale, f"results/pretraining-budget/{name} ran other code than src/ now: {', '.join(stale)}"


def test_readme_quotes_the_budget_table_the_published_numbers_give():
    from tlstudy.report import study

    summary = (BUDGET / "summary.md").read_text()
    assert summary == budget_script().table(json.loads((BUDGET / "budget.json").read_text()), study.numbers())
    assert summary in (PROJECT / "README.md").read_text(), "README's pretraining-budget table differs from results/"
    timing = json.loads((BUDGET / "timing.json").read_text())
    assert timing["machine"] and timing["total"]["cpu_s"] > 0
    assert set(timing["experiments"]) == set(json.loads((BUDGET / "budget.json").read_text()))
