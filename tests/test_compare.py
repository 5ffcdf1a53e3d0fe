"""`tlstudy compare`: `dvc exp show --json` turned around, a row per part and optimizer."""

from tlstudy import compare


def rev(name, scratch, augment=None):
    metrics = {
        "metrics/stats.json": {"data": {"images": 10}},
        "metrics/scratch.json": {
            "data": {"sgd": {"test_acc": scratch[0], "lr": 0.01}, "adam": {"test_acc": scratch[1]}}
        },
        "metrics/pretrain/pacs_sources.json": {"data": {"val_acc": 0.6, "cartoon_test_acc": 0.3}},
    }
    if augment is not None:
        metrics["metrics/augment.json"] = {"data": {"colour jitter": {"test_acc": augment}, "best_variant": "hflip"}}
    return {"rev": name, "name": None if name == "workspace" else name, "data": {"metrics": metrics}}


def test_a_row_per_part_and_group_a_column_per_experiment():
    baseline = rev("3a1c41cbdb5055b", (0.5, 0.625), augment=0.25)
    baseline["name"] = "main"
    baseline["experiments"] = [{"revs": [rev("lr-001", (0.75, 0.125))]}]
    text = compare.table([rev("workspace", (0.75, 0.125)), baseline])
    lines = text.splitlines()
    assert lines[0].split() == ["test_acc", "(%)", "workspace", "main", "lr-001"]
    assert lines[1].split() == ["scratch", "sgd", "75.00", "50.00", "75.00"]
    assert lines[2].split() == ["scratch", "adam", "12.50", "62.50", "12.50"]
    # A sweep's families; a revision without the file shows a dash, not a number.
    assert lines[3].split() == ["augment", "colour", "jitter", "—", "25.00", "—"]
    assert len(lines) == 4  # stats, pretraining's flat figures and the best variant's name are not rows
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_another_metric_and_a_short_rev_for_an_unnamed_commit():
    shown = [{"rev": "0123456789abcdef", "name": None, "data": {"metrics": {
        "metrics/scratch.json": {"data": {"sgd": {"test_acc": 0.5, "val_acc": 0.25}}}}}}]  # fmt: skip
    assert compare.table(shown, "val_acc").splitlines() == ["val_acc (%)   0123456", "scratch sgd     25.00"]
