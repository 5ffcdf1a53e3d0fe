"""The published results: they are the output of the profile as it is declared now, and the README
quotes them as they are (a stale or hand-edited result fails here)."""

import json
import re

import pytest
import yaml
from conftest import PROJECT, load_script

from tlstudy.tools import publication
from tlstudy.tools.profile import profile_params

RESULTS = PROJECT / "results"
# A profile's published results: results/<profile>/ beside profiles/<profile>.yaml.
PUBLISHED = sorted(p.name for p in RESULTS.iterdir() if (PROJECT / "profiles" / f"{p.name}.yaml").exists())


def stale(lock_path) -> str | None:
    """Why a published lock's computation is not the code's now, or None where it is: the commit
    whose files it ran (tlstudy.tools.publication.made_by), each of its stages compared with the same
    stage now up to comments, docstrings and moves, less the changes declared neutral."""
    verdict = publication.check(PROJECT, lock_path)
    return None if not verdict.changed else publication.summary(verdict)


def test_the_offline_profile_is_published():
    assert "offline" in PUBLISHED


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_params_are_the_profiles(name):
    published = yaml.safe_load((PROJECT / "results" / name / "params.yaml").read_text())
    changed = publication.undeclared_params(PROJECT, published, profile_params(PROJECT, name))
    assert not changed, f"results/{name} is stale in params {changed}: re-run its profile"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_lock_ran_every_stage_on_those_params(name):
    folder = PROJECT / "results" / name
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((folder / "params.yaml").read_text())
    parts = [*params["parts"], *params["transfer"]]
    expected = {"inspect", "fetch", "stats", "variants", "report"} | {f"pretrain@{b}" for b in params["pretrain"]}
    expected |= {f"train@{p}" for p in params["parts"]} | {f"evaluate@{p}" for p in params["parts"]}
    expected |= {f"transfer@{p}" for p in params["transfer"]} | {f"evaluate_transfer@{p}" for p in params["transfer"]}
    assert set(lock) == expected
    assert {p for p in parts if (folder / "metrics" / f"{p}.json").exists()} == set(parts)
    lr = lock["train@scratch"]["params"]["params.yaml"]["lr"]
    assert lr == params["lr"]


def as_quoted(findings: str) -> str:
    """report/findings.md as the README quotes it: each list item wrapped to lines of at most 120
    bytes, its continuation lines indented, which Markdown renders as the same item. A line holds
    at most one ▲ and one ▼ (a verdict's tests are listed once), three bytes each in UTF-8: 116
    characters leave room for both."""
    import textwrap

    wrap = {"width": 116, "subsequent_indent": "  ", "break_long_words": False, "break_on_hyphens": False}
    return "".join(textwrap.fill(line, **wrap) + "\n" for line in findings.splitlines())


@pytest.mark.parametrize("name", PUBLISHED)
def test_readme_quotes_the_published_summary(name):
    summary = (PROJECT / "results" / name / "report" / "summary.md").read_text()
    assert summary in (PROJECT / "README.md").read_text(), f"README's results differ from results/{name}"
    findings = (PROJECT / "results" / name / "report" / "findings.md").read_text()
    assert as_quoted(findings) in (PROJECT / "README.md").read_text(), f"README's findings differ from results/{name}"
    timing = json.loads((PROJECT / "results" / name / "timing.json").read_text())
    assert timing["stage_total_s"] > 0 and timing["command"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_results_compute_what_the_code_computes_now(name):
    """The published stages ran a commit of this repository, and the code now computes what that
    commit computed: a refactor passes, a changed computation fails until `make offline` re-runs
    it (docs/development.md, "Publications and the code")."""
    why = stale(PROJECT / "results" / name / "dvc.lock")
    assert why is None, f"results/{name}: {why}; re-run its profile (make offline)"


@pytest.mark.parametrize("timing", ["offline/timing.json", "pretraining-budget/timing.json"])
def test_todays_precision_rule_gives_each_publishing_machine_the_precision_its_results_record(timing):
    """What makes the precision rule's change neutral for the publications (results/neutral-changes.yaml):
    on the machine that made each, it chooses what the published runs were computed in."""
    from tlstudy.lib import cpu

    folder = (RESULTS / timing).parent
    m = json.loads((RESULTS / timing).read_text())["machine_details"]
    cap = cpu.onednn_cap(m.get("kernel_env", {}))
    chosen = "bf16" if cpu.bf16_rule(m["cpu_vendor"], m["cpu_flags"], cap)[0] else "fp32"
    recorded = {
        p.group(1) for f in folder.rglob("details/*.json") for p in re.finditer(r'"precision": "(\w+)"', f.read_text())
    }
    assert recorded == {chosen}, f"{folder.name}: computed in {recorded}, the rule picks {chosen} on {m['cpu']}"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_headline_is_the_published_metrics(name):
    """What `dvc metrics show` lists in this repository (results/<name>/headline.json, declared at
    the top of dvc.yaml) is the headline of the per-part files published beside it."""
    from tlstudy.stages.report import headline

    folder = PROJECT / "results" / name
    params = yaml.safe_load((folder / "params.yaml").read_text())
    assert json.loads((folder / "headline.json").read_text()) == headline.headline(params, folder / "metrics")


# results/pretraining-budget: scripts/pretraining-budget.py's experiments of the offline workspace.
BUDGET = RESULTS / "pretraining-budget"
STRONG = [
    ["RandomHorizontalFlip", {"p": 0.5}],
    ["RandomAffine", {"degrees": 10}],
    ["ColorJitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}],
    ["RandomGrayscale", {"p": 0.2}],
]


def declared_stale() -> dict:
    """results/stale.yaml's entry for the budget sweep, or {} (tlstudy.tools.publication)."""
    return publication.stale_declared(PROJECT).get("pretraining-budget", {})


def budget_script():
    return load_script("pretraining-budget")


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
    # scratch does not depend on the budget: every experiment, the strong recipe's too, holds the
    # baseline's accuracies (today's code skips it there; the 2026-12-03 sweep's re-ran it).
    for part in ("scratch", "fewshot_scratch"):
        assert len({json.dumps(e[part], sort_keys=True) for e in numbers.values()}) == 1, part


def beside_its_overrides(folder, epochs: int, recipe: str) -> list[str]:
    """The params in which an experiment of the sweep (its folder) differs from the offline
    profile beyond its budget's overrides and the two augmentation sweeps left out; keys added
    since with the value the code had built in are declared neutral, as for profiles."""
    offline = profile_params(PROJECT, "offline")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    source = params["pretrain"]["pacs_sources"]
    assert source["epochs"] == epochs
    if recipe == "default recipe":
        assert source["augment"] == offline["pretrain"]["pacs_sources"]["augment"]
    else:
        assert source["augment"] == "strong" and params["augmentations"]["strong"] == STRONG
    expected = json.loads(json.dumps(offline))
    for key in ("epochs", "augment"):
        del expected["pretrain"]["pacs_sources"][key], source[key]
    params["augmentations"].pop("strong", None)
    sweeps = {p for p, part in offline["transfer"].items() if part and part.get("augment")}
    assert sweeps and not sweeps & set(params["transfer"])
    expected["transfer"] = {p: v for p, v in expected["transfer"].items() if p not in sweeps}
    return publication.undeclared_params(PROJECT, params, expected)


def test_each_budget_ran_the_offline_profile_with_only_its_overrides():
    for name, (epochs, recipe, _) in default_plan().items():
        changed = beside_its_overrides(BUDGET / name, epochs, recipe)
        declared = declared_stale().get("params", [])
        assert sorted(changed) == sorted(declared), (
            f"results/pretraining-budget/{name} differs in {changed}, results/stale.yaml declares {declared}: "
            "re-run the sweep, or declare what it differs in"
        )


@pytest.mark.parametrize("name", list(default_plan()))
def test_each_budget_computes_what_the_code_computes_now(name):
    lock = yaml.safe_load((BUDGET / name / "dvc.lock").read_text())["stages"]
    assert {"pretrain@pacs_sources", "transfer@finetune", "report"} <= set(lock)
    why = stale(BUDGET / name / "dvc.lock")
    declared = declared_stale()
    if not declared:
        assert why is None, f"results/pretraining-budget/{name}: {why}; re-run the sweep (make budget)"
        return
    # Declared stale: as stale as declared, and no longer once re-run (then the entry must go).
    assert why is not None, f"results/pretraining-budget/{name} is current: remove its entry from results/stale.yaml"
    made_by = publication.made_by(PROJECT, yaml.safe_load((BUDGET / name / "dvc.lock").read_text())["stages"])
    said = str(declared["made_by"])
    assert made_by.startswith(said), f"made by {made_by[:10]}, results/stale.yaml says {said}"


# results/carried/pretraining-budget: the sweep's experiments carried out of the workspace as each
# finished, before the whole sweep is published (scripts/pretraining-budget.py).
CARRIED_BUDGETS = RESULTS / "carried/pretraining-budget"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in CARRIED_BUDGETS.glob("*/sittings.json")) or [None])
def test_each_carried_budget_ran_todays_code_with_only_its_overrides_and_finished(name):
    if name is None:
        assert not CARRIED_BUDGETS.exists() or not any(CARRIED_BUDGETS.iterdir()), "a carried folder lacks sittings"
        return
    folder, plan = CARRIED_BUDGETS / name, default_plan()
    assert name in plan, f"{folder}: not an experiment of the default plan ({', '.join(plan)})"
    why = stale(folder / "dvc.lock")
    assert why is None, f"{folder.relative_to(PROJECT)}: {why}; remove the folder and run it again (make budget)"
    epochs, recipe, overrides = plan[name]
    assert beside_its_overrides(folder, epochs, recipe) == []
    assert json.loads((folder / "overrides.json").read_text())[: len(overrides)] == overrides
    sittings = json.loads((folder / "sittings.json").read_text())
    assert sittings["experiment"] == name and sittings["sittings"][-1]["finished"]
    assert all(s["cpu_s"] > 0 for s in sittings["sittings"])


def test_the_docs_quote_the_budget_table_and_the_readme_its_findings_as_published():
    from tlstudy.stages.report import study

    summary = (BUDGET / "summary.md").read_text()
    readme, results = (PROJECT / "README.md").read_text(), (PROJECT / "docs/results.md").read_text()
    if declared_stale():
        # The earlier code's table, quoted in the docs as that; the README gives no finding from it.
        assert summary in results, "docs/results.md's pretraining-budget table differs from results/"
        assert summary not in readme and "results/stale.yaml" in readme and "results/stale.yaml" in results
    else:
        numbers = json.loads((BUDGET / "budget.json").read_text())
        assert summary == budget_script().table(numbers, study.numbers())
        assert summary in results, "docs/results.md's pretraining-budget table differs from results/"
        # The README has room for the verdicts, not the two tables: the findings, as the rule gave them.
        finding = (BUDGET / "findings.md").read_text()
        assert finding == budget_script().finding(numbers) and as_quoted(finding) in readme, (
            "README's pretraining-budget finding differs from results/"
        )
    timing = json.loads((BUDGET / "timing.json").read_text())
    assert timing["machine"] and timing["total"]["cpu_s"] > 0
    assert set(timing["experiments"]) == set(json.loads((BUDGET / "budget.json").read_text()))


# results/domains: scripts/domains.py's targets, each carried there as soon as its experiment is
# done (docs/domains.md#resuming), then the benchmark published around them.
DOMAINS = RESULTS / "domains"
CARRIED = sorted(p.name for p in DOMAINS.iterdir() if (p / "sittings.json").is_file()) if DOMAINS.is_dir() else []


@pytest.mark.parametrize("target", CARRIED)
def test_each_carried_target_ran_todays_code_on_the_offline_profile_with_its_domain(target):
    folder = DOMAINS / target
    why = stale(folder / "dvc.lock")
    assert why is None, f"results/domains/{target}: {why}; remove the folder and run it again (make domains)"
    params = yaml.safe_load((folder / "params.yaml").read_text())
    offline = profile_params(PROJECT, "offline")
    assert params["data"]["domain"] == target and params["seeds"] == offline["seeds"]
    assert {p: params["parts"][p] for p in offline["parts"]} == offline["parts"]
    said = json.loads((folder / "overrides.json").read_text())
    assert said[0] == f"data.domain={target}"
    sittings = json.loads((folder / "sittings.json").read_text())
    assert sittings["experiment"] == f"target-{target}" and sittings["sittings"][-1]["finished"]
    assert all(s["cpu_s"] > 0 for s in sittings["sittings"])


def test_the_domains_publication_is_what_its_numbers_give_and_the_readme_quotes_its_finding():
    readme = (PROJECT / "README.md").read_text()
    if not (DOMAINS / "domains.json").is_file():
        assert "not yet published" in readme, "README gives a domains finding with no publication"
        return
    script = load_script("domains")
    numbers = json.loads((DOMAINS / "domains.json").read_text())
    assert (DOMAINS / "summary.md").read_text() == script.table(numbers)
    finding = (DOMAINS / "findings.md").read_text()
    assert finding == script.finding(numbers) and as_quoted(finding) in readme, "README's domains finding differs"
    # Every target published, each from its carried experiment or the offline publication.
    assert list(numbers["targets"]) == ["art_painting", "cartoon", "photo", "sketch"]
    assert {d for d, t in numbers["targets"].items() if t["experiment"]} == set(CARRIED)
    timing = json.loads((DOMAINS / "timing.json").read_text())
    assert all(timing["targets"][d]["sittings"] >= 1 for d in numbers["targets"])
