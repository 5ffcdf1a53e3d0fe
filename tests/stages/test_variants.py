"""The `variants` stage: each part's augmentation variants in a params file of its own, which its
train and evaluate stages depend on, so a new variant changes the files of the parts that train
with it and no other (tests/pipeline/test_dvc_pipeline.py runs it under DVC)."""

from conftest import SWEEPS

from tlstudy.lib import yamlio
from tlstudy.stages import variants


def written() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(variants.ROOT.glob("*.yaml"))}


def test_a_new_variant_changes_only_the_files_of_the_parts_that_train_with_it(params, in_tmp):
    variants.run(params)
    before = written()
    assert set(before) == {*params["parts"], *params["transfer"]}
    assert yamlio.load(before["scratch"]) == {"none": []}  # no `augment`: the identity alone
    assert yamlio.load(before["augment"]) == params["augmentations"]  # `augment: all`
    params["augmentations"]["vflip"] = [["RandomVerticalFlip", {"p": 0.5}]]
    del params["parts"]["classifier"]
    variants.run(params)
    after = written()
    assert {p for p in after if before[p] != after[p]} == set(SWEEPS)
    assert yamlio.load(after["augment"])["vflip"] == [["RandomVerticalFlip", {"p": 0.5}]]
    assert "classifier" not in after  # a part no longer declared leaves no file behind
