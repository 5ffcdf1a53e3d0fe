"""The published results: they are the output of the profile as it is declared now, and the README
quotes them as they are (a stale or hand-edited result fails here)."""

import json

import pytest
import yaml
from conftest import PROJECT

from tlstudy.profile import profile_params

RESULTS = PROJECT / "results"
# A profile's published results: results/<profile>/ beside profiles/<profile>.yaml.
PUBLISHED = sorted(p.name for p in RESULTS.iterdir() if (PROJECT / "profiles" / f"{p.name}.yaml").exists())


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
    import hashlib

    lock = yaml.safe_load((PROJECT / "results" / name / "dvc.lock").read_text())["stages"]
    stale = sorted(
        {
            f"{dep['path']} ({stage})"
            for stage, entry in lock.items()
            for dep in entry.get("deps", [])
            if dep["path"].startswith("src/")
            and hashlib.md5((PROJECT / dep["path"]).read_bytes()).hexdigest() != dep["md5"]
        }
    )
    assert not stale, f"results/{name} ran other code than src/ now: {', '.join(stale)}"


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_headline_is_the_published_metrics(name):
    """What `dvc metrics show` lists in this repository (results/<name>/headline.json, declared at
    the top of dvc.yaml) is the headline of the per-part files published beside it."""
    from tlstudy.report import headline

    folder = PROJECT / "results" / name
    assert json.loads((folder / "headline.json").read_text()) == headline.headline(folder / "metrics")
