import pytest

from tlstudy.lib.atomic import write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "metrics" / "part.json"
    write_json(target, {"sgd": {"test_acc": 0.5}})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_json(target, {"sgd": object()})  # fails half-way through serialising
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["part.json"]


def test_a_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "a.csv"
    write_text(target, "x\n" * 1000)
    write_text(target, "y\n")
    assert target.read_text() == "y\n"
