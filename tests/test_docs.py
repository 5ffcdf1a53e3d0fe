"""The README and docs/ as a newcomer follows them: every relative link and #anchor resolves; every
command they give works as written (make targets, `python -m tlstudy` and `dvc` subcommands and their
flags, stage names under the params they are run with, the files each stage writes); the numbers
they quote from the study and the published JSON are the sources' own; the README stays a landing
page; LICENSE is the MIT text alone."""

import argparse
import functools
import json
import re
import shlex
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, load_script

from tlstudy.tools import publication

DOCS = sorted((PROJECT / "docs").glob("*.md"))
PAGES = [PROJECT / "README.md", *DOCS]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"(?ms)^```[^\n]*\n(.*?)^```")
README = PROJECT / "README.md"
# The summaries the README quotes verbatim (tests/test_results.py checks they are the published ones,
# and the findings it quotes wrapped); the budget sweep's findings once it is current (results/stale.yaml).
QUOTED = [PROJECT / "results/offline/report/summary.md"]
FINDINGS = [PROJECT / "results/offline/report/findings.md"]
if "pretraining-budget" not in publication.stale_declared(PROJECT):
    FINDINGS.append(PROJECT / "results/pretraining-budget/findings.md")
PROFILES = sorted(p.stem for p in (PROJECT / "profiles").glob("*.yaml"))


def ids(path: Path) -> str:
    return path.relative_to(PROJECT).as_posix()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose(path: Path) -> str:
    """A page without its fenced code blocks."""
    return FENCE.sub("", path.read_text())


def anchors(path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", prose(path))}


def links(path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not t.startswith(("http://", "https://", "mailto:"))]


def test_slug_follows_github():
    assert slug("On a GPU: `scripts/gpu-check.sh`") == "on-a-gpu-scriptsgpu-checksh"
    assert slug("The study's own settings on a CPU, measured") == "the-studys-own-settings-on-a-cpu-measured"


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target} (an anchor into a file that is not Markdown)")
    assert not broken, f"{page.name}: {', '.join(broken)}"


# --- the commands ---------------------------------------------------------------------------------


def code(page: Path) -> list[str]:
    """Every piece of code a page gives: each line of its fenced blocks (less a trailing `# comment`)
    and each inline code span, its line breaks made spaces."""
    text = page.read_text()
    lines = [re.sub(r"\s+#\s.*$", "", line) for block in FENCE.findall(text) for line in block.splitlines()]
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", FENCE.sub("", text))]
    return [c for c in lines + spans if c.strip()]


def commands(page: Path) -> list[list[str]]:
    """The page's code as commands, split at `&&`, `;` and `|`, each as shell words."""
    out = []
    for piece in code(page):
        for cmd in re.split(r"&&|;|\|(?!\|)", piece):
            try:
                words = shlex.split(cmd)
            except ValueError:
                words = cmd.split()
            if words:
                out.append(words)
    return out


def after(words: list[str], *head: str) -> list[str] | None:
    """The words after `head` in a command (`python -m tlstudy …`, `dvc …`), or None."""
    for i in range(len(words) - len(head) + 1):
        if tuple(words[i : i + len(head)]) == head:
            return words[i + len(head) :]
    return None


def placeholder(word: str) -> bool:
    return any(c in word for c in "<…$")


def flags(words: list[str]) -> set[str]:
    return {w.split("=")[0] for w in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0].choices if found else {}


def resolve(parser: argparse.ArgumentParser, words: list[str], depth: int) -> tuple[list[str], argparse.ArgumentParser]:
    """The subcommand path the words name (at most `depth` deep) and its parser."""
    path = []
    for word in words[:depth]:
        sub = subparsers(parser)
        if word not in sub:
            break
        path.append(word)
        parser = sub[word]
    return path, parser


def misnamed(pages, head: tuple[str, ...], parser_of, depth: int) -> list[str]:
    bad = []
    for page in pages:
        for words in commands(page):
            rest = after(words, *head)
            if rest is None or not rest or placeholder(rest[0]) or rest[0].startswith("-"):
                continue
            path, parser = resolve(parser_of(rest[0]), rest, depth)
            if not path:
                bad.append(f"{page.name}: `{' '.join(head + tuple(rest))}`: no command {rest[0]!r}")
                continue
            unknown = flags(rest[len(path) :]) - set(parser._option_string_actions)
            if unknown:
                bad.append(f"{page.name}: `{' '.join(head + tuple(rest))}`: no flag {sorted(unknown)}")
    return bad


def test_every_tlstudy_command_and_flag_the_docs_give_exists():
    from tlstudy import cli
    from tlstudy.tools import slurm

    def parser_of(command: str) -> argparse.ArgumentParser:
        # `python -m tlstudy slurm …` goes to the Slurm tool's own parser (cli.main hands it over).
        if command == "slurm":
            top = argparse.ArgumentParser()
            top.add_subparsers().add_parser("slurm", parents=[slurm._parser()], add_help=False)
            return top
        return cli._parser()

    bad = misnamed(PAGES, ("python", "-m", "tlstudy"), parser_of, 2)
    assert not bad, "\n".join(bad)
    assert any(after(w, "python", "-m", "tlstudy") for p in PAGES for w in commands(p))


def test_every_dvc_command_and_flag_the_docs_give_exists():
    from dvc.cli.parser import get_main_parser

    main = get_main_parser()
    bad = misnamed(PAGES, ("dvc",), lambda _: main, 2)
    assert not bad, "\n".join(bad)


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"(?m)^([\w-]+):", (PROJECT / "Makefile").read_text()))
    named = {(p.name, w[1]) for p in PAGES for w in commands(p) if w[0] == "make" and len(w) > 1 and "=" not in w[1]}
    named |= {(p.name, t) for p in PAGES for t in re.findall(r"`make ([\w-]+)", p.read_text())}
    missing = sorted(f"{page}: make {t}" for page, t in named if t not in targets)
    assert named and not missing, f"make targets the Makefile lacks: {missing}"


def test_no_page_runs_the_pipeline_with_dvc_from_an_unactivated_venv():
    """The stages run `python -m tlstudy.stage`: DVC started as `.venv/bin/dvc` without the venv on
    PATH runs them with the system's Python (`No module named tlstudy`)."""
    bad = [f"{p.name}: {' '.join(w)}" for p in PAGES for w in commands(p) if w[0].endswith(".venv/bin/dvc")]
    assert not bad, bad


def test_dvc_pull_is_given_only_with_a_remote():
    """A fresh clone has no DVC remote (.dvc/config), so `dvc pull` works only where one is set up:
    every paragraph that gives it says where the remote comes from."""
    assert "remote" not in (PROJECT / ".dvc/config").read_text()
    bad = []
    for page in PAGES:
        for para in re.split(r"\n\s*\n", page.read_text()):
            if re.search(r"dvc (exp )?pull", para) and "remote" not in para:
                bad.append(f"{page.name}: {para.strip()[:80]}…")
    assert not bad, bad


# --- stages, as dvc.yaml expands them --------------------------------------------------------------


@functools.cache
def params_of(profile: str | None) -> dict:
    from tlstudy import params as P
    from tlstudy.tools.profile import profile_params

    return P.load(PROJECT / "params.yaml") if profile is None else profile_params(PROJECT, profile)


def stage_outputs(profile: str | None = None) -> dict[str, list[str]]:
    """Every stage of dvc.yaml under the params (a foreach expanded to `<group>@<key>`), with the
    paths it writes: its outs, metrics and plots."""
    params = params_of(profile)
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, spec in stages.items():
        if "foreach" in spec:
            group = re.fullmatch(r"\$\{(\w+)\}", spec["foreach"]).group(1)
            items = [(f"{name}@{key}", spec["do"], key) for key in params[group]]
        else:
            items = [(name, spec, None)]
        for stage, body, key in items:
            paths = [
                p if isinstance(p, str) else next(iter(p))
                for k in ("outs", "metrics", "plots")
                for p in body.get(k, [])
            ]
            out[stage] = [p.replace("${key}", key) if key else p for p in paths]
    return out


STAGE = re.compile(
    r"^(?:inspect|fetch|stats|variants|report|(?:pretrain|train|evaluate|transfer|evaluate_transfer)@\S+)$"
)


def test_stage_outputs_expand_foreach():
    default = stage_outputs()
    assert "metrics/scratch.json" in default["evaluate@scratch"]
    assert "transfer@finetune_pacs" in default and "transfer@classifier" not in default
    assert "transfer@classifier" in stage_outputs("offline")


def test_every_stage_the_docs_name_exists_under_the_default_params_or_a_profile():
    known = set(stage_outputs()).union(*(stage_outputs(p) for p in PROFILES))
    named = {
        (page.name, word)
        for page in PAGES
        for piece in code(page)
        for word in piece.replace(",", " ").split()
        if STAGE.match(word) and not placeholder(word)
    }
    unknown = sorted(f"{page}: {stage}" for page, stage in named if stage not in known)
    assert named and not unknown, f"stages no params give: {unknown}"


def paper_table() -> list[dict[str, str]]:
    text = (PROJECT / "docs/reproduce-the-paper.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in r.strip("|").split("|")))) for r in rows[1:]]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_reproduce_the_paper_names_stages_that_exist_and_write_what_it_says():
    table = paper_table()
    assert len(table) >= 10
    bad = []
    for row in table:
        for column, profile in (("stages, study settings", None), ("stages, offline", "offline")):
            stages = [s for s in ticked(row[column]) if STAGE.match(s)]
            if row[column].startswith("—"):
                continue
            outputs = stage_outputs(profile)
            missing = [s for s in stages if s not in outputs]
            if missing or not stages:
                bad.append(f"{row['study'][:30]}: {column}: no stage {missing or row[column]}")
                continue
            written = [o for s in stages for o in outputs[s]]
            for path in ticked(row["lands in"]):
                base = path.split("*")[0].rstrip("/")
                if not any(base == o or base.startswith(o.rstrip("/") + "/") for o in written):
                    bad.append(f"{row['study'][:30]}: {column}: {path} is written by none of {stages}")
    assert not bad, "\n".join(bad)


def project_study_time():
    return load_script("project-study-time")


def test_reproduce_the_paper_projects_the_gpu_time_from_the_studys_timing():
    """Each row's GPU time, and the total, are what scripts/project-study-time.py --gpu computes from
    the study's own timing and params.yaml's grid (every sweep counted, both placements)."""
    from tlstudy.stages.report import study

    script = project_study_time()
    projected = script.gpu_projection(params_of(None), study.numbers()["timing"])
    bad = []
    for row in paper_table():
        trained = [
            s for s in ticked(row["stages, study settings"]) if s.split("@")[0] in ("train", "transfer", "pretrain")
        ]
        if not trained:
            continue
        want = script.duration(sum(projected[s] for s in trained))
        got = re.sub(r"^≤\s*", "", row["GPU, study settings (projected)"]).split(" (")[0]
        if got != want:
            bad.append(f"{row['study'][:30]}: {got}, projected {want}")
    assert not bad, bad
    total = script.duration(sum(projected.values()))
    for page in ("docs/reproduce-the-paper.md", "docs/machines.md", "README.md"):
        assert f"{total.replace(' h', '')} h" in (PROJECT / page).read_text(), (
            f"{page} does not give the GPU total {total}"
        )


# --- numbers quoted from their sources -----------------------------------------------------------


def colour_jitter_ranges() -> dict[str, tuple[Decimal, Decimal]]:
    """The study's Table VIII colour-jitter variants: their validation and test range, in %."""
    from tlstudy.stages.report import study
    from tlstudy.training.transforms import family

    params = params_of(None)
    rows = [r for v, r in study.numbers()["augment"].items() if family(params["augmentations"][v]) == "colour jitter"]
    pct = lambda x: Decimal(str(x)) * 100  # noqa: E731
    return {k: (min(pct(r[k]) for r in rows), max(pct(r[k]) for r in rows)) for k in ("val_acc", "test_acc")}


def test_the_studys_numbers_are_its_reports():
    """study.yaml's Table VIII holds the report's colour-jitter rows (where the report is at hand)."""
    report = PROJECT.parent / "shared" / "study" / "report.txt"
    if not report.exists():
        pytest.skip("the study's report.txt is not here")
    text = report.read_text()
    found = re.findall(r"ColorJitter\((\w+)=[\d.]+\)\t[\d.]+\t\d+\t([\d.]+) %\t([\d.]+) %", text)
    assert len(found) == 5
    vals = [Decimal(v) for _, v, _ in found]
    tests = [Decimal(t) for _, _, t in found]
    ranges = colour_jitter_ranges()
    assert ranges["val_acc"] == (min(vals), max(vals)) and ranges["test_acc"] == (min(tests), max(tests))


def test_the_studys_colour_jitter_range_is_quoted_exactly_or_not_at_all():
    """No page rounds the study's Table VIII colour-jitter range its own way (79–85, 14–34, 14.6–33.5):
    a range within 1.5 points of it at both ends must be it."""
    ranges = colour_jitter_ranges()
    assert ranges == {"val_acc": (Decimal("78.72"), Decimal("85.11")), "test_acc": (Decimal("14.56"), Decimal("33.54"))}
    bad = []
    for page in PAGES:
        for lo, hi in re.findall(r"(\d+(?:\.\d+)?)\s*–\s*(\d+(?:\.\d+)?)\s*%", page.read_text()):
            for want in ranges.values():
                near = abs(Decimal(lo) - want[0]) <= Decimal("1.5") and abs(Decimal(hi) - want[1]) <= Decimal("1.5")
                if near and (Decimal(lo), Decimal(hi)) != want:
                    bad.append(f"{page.name}: {lo}–{hi} % (the study: {want[0]}–{want[1]} %)")
    assert not bad, bad
    assert "78.72–85.11 %" in (PROJECT / "docs/study.md").read_text()


def published_numbers() -> list[Decimal]:
    """Every number the published metrics (not the details: per-seed and per-run figures would match
    almost anything) and the study's numbers hold, as percentages where they are fractions."""
    from tlstudy.stages.report import study

    values = []

    def walk(tree):
        if isinstance(tree, dict):
            for v in tree.values():
                walk(v)
        elif isinstance(tree, list):
            for v in tree:
                walk(v)
        elif isinstance(tree, float):
            values.append(Decimal(str(tree)) * (100 if abs(tree) <= 1 else 1))

    for path in (PROJECT / "results").rglob("*.json"):
        if "details" not in path.relative_to(PROJECT / "results").parts:
            walk(json.loads(path.read_text()))
    walk(study.numbers())
    return values + sweep_means()


def sweep_means() -> list[Decimal]:
    """The published sweeps' test accuracy averaged over any set of variant families (the pages
    quote, e.g., the geometric and blur variants together), in %."""
    from itertools import combinations

    from tlstudy.training.transforms import FAMILIES, family

    params = yaml.safe_load((PROJECT / "results/offline/params.yaml").read_text())
    out = []
    for path in (PROJECT / "results/offline/details").glob("augment*.json"):
        groups = json.loads(path.read_text())
        acc = {g: m["test_acc"] for g, m in groups.items() if g in params["augmentations"] and "test_acc" in m}
        for n in range(1, len(FAMILIES) + 1):
            for chosen in combinations(FAMILIES, n):
                picked = [a for g, a in acc.items() if family(params["augmentations"][g]) in chosen]
                if picked:
                    out.append(Decimal(str(sum(picked) / len(picked))) * 100)
    return out


@pytest.mark.parametrize("page", [README, PROJECT / "docs/results.md"], ids=ids)
def test_percentages_quoted_from_the_published_json_are_rounded_from_it(page):
    """A one-decimal percentage within 0.1 of a published value must be some published value
    rounded (49.0 % for 0.489452 is not): read from the JSON, so a republication that updates the
    files and the pages passes."""
    values = published_numbers()

    def rounds_to(v: Decimal, x: Decimal) -> bool:
        return any(v.quantize(Decimal("0.1"), rounding=r) == x for r in (ROUND_HALF_UP, ROUND_HALF_EVEN))

    # Paragraphs and list items dated 2026-… quote earlier publications, which git's history holds.
    current = [p for p in re.split(r"\n\s*\n|\n(?=- )", page.read_text()) if "2026-" not in p]
    bad = []
    for text in re.findall(r"(?<![\d.])(\d{1,2}\.\d) %", "\n".join(current)):
        x = Decimal(text)
        close = [v for v in values if abs(v - x) < Decimal("0.1")]
        if close and not any(rounds_to(v, x) for v in close):
            bad.append(f"{x} % (published: {', '.join(str(v) for v in close[:3])})")
    assert not bad, f"{page.name}: {bad}"


# --- machines ----------------------------------------------------------------------------------

MACHINES = PROJECT / "docs/machines.md"
TAG = re.compile(r"`((?:epyc|xeon)-[a-z0-9-]+)`")


def machine_rows() -> dict[str, str]:
    """The machines table: tag -> its CPU cell."""
    rows = {}
    for line in MACHINES.read_text().splitlines():
        m = re.match(r"\| `((?:epyc|xeon)-[a-z0-9-]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_machines_table_names_every_publishing_machine():
    rows = machine_rows()
    assert len(rows) >= 5
    for timing in sorted((PROJECT / "results").glob("*/timing.json")):
        cpu = json.loads(timing.read_text())["machine_details"]["cpu_model"]
        said = f"family {cpu['family']} model {cpu['model']}"
        assert any(said in cell for cell in rows.values()), f"{ids(timing)}: {said} is in no row of docs/machines.md"


def test_every_machine_is_named_by_its_tag():
    """A page names a machine by the table's tag (docs/machines.md), never by a description of its
    own: every tag used is the table's, every paragraph that mentions an EPYC or a Xeon names a tag,
    and the CPU's family and model are stated in the table alone."""
    tags = set(machine_rows())
    bad = []
    for page in PAGES:
        text = page.read_text()
        bad += [f"{page.name}: unknown tag {t}" for t in set(TAG.findall(text)) - tags]
        if page == MACHINES:
            continue
        bad += [f"{page.name}: {m} (the machines table says it)" for m in re.findall(r"family \d+,? model \d+", text)]
        for para in re.split(r"\n\s*\n", FENCE.sub("", text)):
            if re.search(r"\b(EPYC|Xeon)\b", para) and not TAG.search(para) and "machines.md" not in para:
                bad.append(f"{page.name}: names a machine without its tag: {para.strip()[:70]}…")
    assert not bad, "\n".join(bad)


# --- the README as a landing page, the licence ------------------------------------------------------


def test_readme_is_a_landing_page_and_every_docs_page_is_indexed():
    readme = README.read_text()
    assert len(readme.splitlines()) <= 150
    pages = {p.name for p in DOCS}
    indexed = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    assert pages == indexed, f"docs pages the README's index misses: {sorted(pages - indexed)}"


def test_readme_fits_a_landing_page():
    """At most 1,200 words (`wc -w`), and no prose line over 120 characters: tables and the quoted
    published summaries are exempt."""
    readme = README.read_text()
    assert len(readme.split()) <= 1200, f"README.md: {len(readme.split())} words"
    for quoted in QUOTED:
        readme = readme.replace(quoted.read_text(), "")
    long = [line[:60] for line in readme.splitlines() if len(line) > 120 and not line.startswith("|")]
    assert not long, f"README.md lines over 120 characters: {long}"


def test_readme_defines_its_terms_before_the_results_use_them():
    readme = README.read_text()
    terms = readme.index("## Terms")
    for term in ("pretrained here", "head-only", "placement", "`headline.json`", "pp", "variant"):
        assert readme.index(f"**{term}**") > terms, term
    for quoted in [*QUOTED, *FINDINGS]:
        assert readme.index(quoted.read_text()[:40]) > terms


MIT = """MIT License

Copyright (c) 2026 The tlstudy authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the
Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def test_licence_is_the_mit_text_alone_and_the_data_terms_live_elsewhere():
    """Anything beside the MIT text makes GitHub's licence detection (licensee) say NOASSERTION."""
    assert " ".join((PROJECT / "LICENSE").read_text().split()) == " ".join(MIT.split())
    assert "PACS" in (PROJECT / "NOTICE").read_text() and "(NOTICE)" in README.read_text()
    citation = (PROJECT / "CITATION.cff").read_text()
    assert "cff-version:" in citation and "license: MIT" in citation
    assert "Deeper, Broader and Artier Domain Generalization" in citation
