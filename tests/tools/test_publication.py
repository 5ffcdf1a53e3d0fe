"""tlstudy.tools.publication on a small repository of its own: a publication's lock names the commit
whose code made it; comments, docstrings and moves leave it current; a changed computation fails
it, naming the stage and the definition, until it is re-run or the change is declared neutral."""

import hashlib
from pathlib import Path

import pytest
import yaml
from conftest import git

from tlstudy.tools import publication

ENGINE = '''\
"""The engine."""
import torch


def make_optimizer(params, lr):
    """SGD with the study's momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def speed():
    return "fp32"
'''
TRAIN = """\
from pkg import engine


def run(params):
    return engine.make_optimizer(params, 0.1), engine.speed()
"""


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def lock_of(repo: Path, files: list[str]) -> dict:
    deps = [{"path": f, "md5": hashlib.md5((repo / f).read_bytes()).hexdigest()} for f in files]
    return {"schema": "2.0", "stages": {"train@scratch": {"cmd": "x", "deps": deps}}}


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with a two-module stage, published at its first commit."""
    (tmp_path / "src/pkg").mkdir(parents=True)
    (tmp_path / "src/pkg/engine.py").write_text(ENGINE)
    (tmp_path / "src/pkg/train.py").write_text(TRAIN)
    files = ["src/pkg/engine.py", "src/pkg/train.py"]
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"train": {"foreach": ["scratch"], "do": {"deps": files}}}})
    )
    git(tmp_path, "init", "-q")
    first = commit(tmp_path, "stage code")
    (tmp_path / "results/offline").mkdir(parents=True)
    (tmp_path / "results/offline/dvc.lock").write_text(yaml.safe_dump(lock_of(tmp_path, files)))
    commit(tmp_path, "publication")
    (tmp_path / "first").write_text(first)
    return tmp_path


def verdict(repo: Path) -> publication.Verdict:
    return publication.check(repo, repo / "results/offline/dvc.lock")


def edit(repo: Path, path: str, old: str, new: str) -> None:
    f = repo / path
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new))
    commit(repo, f"edit {path}")


def test_the_lock_names_the_commit_whose_files_made_it_and_later_commits_do_not_move_it(repo):
    first = (repo / "first").read_text()
    assert verdict(repo).commit == first
    edit(repo, "src/pkg/engine.py", "momentum=0.9)", "momentum=0.9)  # the study's")
    v = verdict(repo)
    assert v.commit == first and v.changed == {}


def test_comments_docstrings_layout_and_a_move_leave_the_publication_current(repo):
    edit(repo, "src/pkg/engine.py", '"""SGD with the study\'s momentum."""', '"""SGD, momentum 0.9 as in the study."""')
    edit(repo, "src/pkg/engine.py", "lr=lr, momentum=0.9", "lr=lr,\n        momentum=0.9,  # as the study's\n    ")
    # speed() moves to a module of its own; its caller names it through that module now.
    edit(repo, "src/pkg/engine.py", 'def speed():\n    return "fp32"\n', "")
    (repo / "src/pkg/device.py").write_text('def speed():\n    """Moved."""\n    return "fp32"\n')
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["stages"]["train"]["do"]["deps"].append("src/pkg/device.py")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec))
    edit(repo, "src/pkg/train.py", "from pkg import engine\n", "from pkg import device, engine\n")
    edit(repo, "src/pkg/train.py", "engine.speed()", "device.speed()")
    assert verdict(repo).changed == {}


def test_a_changed_computation_fails_naming_the_stage_and_definition(repo):
    edit(repo, "src/pkg/engine.py", "momentum=0.9", "momentum=0.95")
    v = verdict(repo)
    assert v.changed == {"train@scratch": ["make_optimizer"]}
    assert "make_optimizer (1 stage: train@scratch)" in publication.summary(v)


def test_a_declared_neutral_change_passes_until_the_definition_changes_again(repo, monkeypatch):
    edit(repo, "src/pkg/engine.py", 'return "fp32"', 'return "fp32" if True else "bf16"')
    assert verdict(repo).changed == {"train@scratch": ["speed"]}
    monkeypatch.chdir(repo)
    assert publication.main(["declare", "speed", "--why", "the same answer on the publishing machine"]) == 0
    v = verdict(repo)
    assert v.changed == {} and v.declared == {"speed"}
    edit(repo, "src/pkg/engine.py", 'return "fp32" if True else "bf16"', 'return "bf16"')
    assert verdict(repo).changed == {"train@scratch": ["speed"]}


def test_a_publication_declared_stale_passes_only_while_made_by_the_declared_commit(repo, monkeypatch, capsys):
    edit(repo, "src/pkg/engine.py", "momentum=0.9", "momentum=0.95")
    monkeypatch.chdir(repo)
    assert publication.main([]) == 1
    made_by = verdict(repo).commit
    entry = {"params": [], "why": "hours of CPU", "rerun": "make offline"}
    (repo / publication.STALE).write_text(yaml.safe_dump({"offline": {"made_by": made_by[:10], **entry}}))
    assert publication.main([]) == 0
    assert "declared stale in results/stale.yaml: make offline" in capsys.readouterr().out
    # Declared for another commit: the check fails again.
    (repo / publication.STALE).write_text(yaml.safe_dump({"offline": {"made_by": "0" * 10, **entry}}))
    assert publication.main([]) == 1
    (repo / publication.STALE).write_text(yaml.safe_dump({"offline": {"made_by": made_by[:10]}}))
    with pytest.raises(publication.PublicationError, match="offline: missing params, why, rerun"):
        publication.stale_declared(repo)


def test_a_lock_of_files_no_commit_holds_is_refused(repo):
    lock = yaml.safe_load((repo / "results/offline/dvc.lock").read_text())
    lock["stages"]["train@scratch"]["deps"][0]["md5"] = "0" * 32
    (repo / "results/offline/dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(publication.PublicationError, match="no commit of this repository holds"):
        verdict(repo)


def test_a_params_key_added_since_a_publication_is_stale_until_declared_and_its_value_is_pinned(tmp_path):
    """A key the profile gained (a new optimizer's settings, a parameter with the value the old
    code had built in) fails the params check until declared; changing its value fails it again."""
    from tlstudy.tools import publication

    (tmp_path / "params.yaml").write_text("lr: 0.1\ndata: {domain: cartoon, size: 64}\nadamw: {weight_decay: 0.01}\n")
    published = {"lr": 0.1, "data": {"size": 64}}
    now = {"lr": 0.1, "data": {"domain": "cartoon", "size": 64}, "adamw": {"weight_decay": 0.01}}
    assert publication.params_changes(published, now) == {"adamw": {"weight_decay": 0.01}, "data.domain": "cartoon"}
    assert publication.undeclared_params(tmp_path, published, now) == ["adamw", "data.domain"]

    publication.declare(tmp_path, "params.data.domain", why="cartoon was the only target the code had")
    publication.declare(tmp_path, "params.adamw", why="no published part trains with AdamW")
    assert publication.undeclared_params(tmp_path, published, now) == []

    assert publication.undeclared_params(tmp_path, published, {**now, "data": {"domain": "sketch", "size": 64}}) == [
        "data.domain"
    ]
    assert publication.undeclared_params(tmp_path, {**published, "lr": 0.2}, now) == ["lr"]


def test_a_module_moved_into_a_sub_package_leaves_the_publication_current(tmp_path):
    """Where a module sits is layout: a definition's own import of the project's module and a
    string naming that module to importlib follow it into a sub-package, and compute the same;
    a string that names another module does not."""
    run = 'def run(params):\n    from pkg import engine\n\n    return engine.speed(), importlib.import_module("{}")\n'
    (tmp_path / "src/pkg").mkdir(parents=True)
    (tmp_path / "src/pkg/__init__.py").write_text("")
    (tmp_path / "src/pkg/engine.py").write_text(ENGINE)
    (tmp_path / "src/pkg/train.py").write_text("import importlib\n\n\n" + run.format("pkg.engine"))
    files = ["src/pkg/engine.py", "src/pkg/train.py"]
    spec = {"stages": {"train": {"foreach": ["scratch"], "do": {"deps": files}}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    git(tmp_path, "init", "-q")
    commit(tmp_path, "stage code")
    (tmp_path / "results/offline").mkdir(parents=True)
    (tmp_path / "results/offline/dvc.lock").write_text(yaml.safe_dump(lock_of(tmp_path, files)))
    commit(tmp_path, "publication")

    (tmp_path / "src/pkg/training").mkdir()
    (tmp_path / "src/pkg/training/__init__.py").write_text('"""The engine\'s layer."""\n')
    git(tmp_path, "mv", "src/pkg/engine.py", "src/pkg/training/engine.py")
    moved = run.replace("from pkg import engine", "from pkg.training import engine").format("pkg.training.engine")
    (tmp_path / "src/pkg/train.py").write_text("import importlib\n\n\n" + moved)
    spec["stages"]["train"]["do"]["deps"] = ["src/pkg/training/__init__.py", "src/pkg/training/engine.py", files[1]]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    commit(tmp_path, "engine into training/")
    assert verdict(tmp_path).changed == {}

    (tmp_path / "src/pkg/train.py").write_text(
        "import importlib\n\n\n" + moved.replace('"pkg.training.engine"', '"pkg.training"')
    )
    commit(tmp_path, "another module")
    assert verdict(tmp_path).changed == {"train@scratch": ["run"]}
