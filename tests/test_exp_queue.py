"""`python -m tlstudy queue`: what it says to bad input, before it starts anything. The queue served
by real workers is tests/test_queue.py."""

import subprocess

import pytest

from tlstudy import cli, exp_queue, profile


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_jobs_must_be_a_whole_number_from_one(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["queue", "-j", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"'{bad}' is not a number of workers" in err and "whole number, 1 or more" in err, err


def test_outside_a_dvc_repository_it_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["queue", "-j", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not in a DVC repository" in err and "dvc exp run --queue" in err, err


def test_with_nothing_queued_it_starts_no_worker(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*profile.tool_argv("dvc"), "init", "-q"], cwd=tmp_path, check=True)
    lines = []
    assert exp_queue.serve(2, root=tmp_path, log=lines.append) == 0
    assert lines == ["queue: nothing queued; queue experiments first, e.g. `dvc exp run --queue -S lr=0.01`"]
    assert not list((tmp_path / ".dvc").rglob("dvc-exp-worker-*"))
