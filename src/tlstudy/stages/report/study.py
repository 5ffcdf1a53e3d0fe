"""The study's own numbers (resources/study.yaml), as the report sets them beside ours: every
number the study gives, `None` for one it does not."""

from __future__ import annotations

from importlib import resources

from tlstudy.lib import yamlio


def numbers() -> dict:
    return yamlio.load(resources.files("tlstudy.resources").joinpath("study.yaml").read_text())


def part(study: dict, name: str) -> dict:
    """A part's table (title, backbone, per optimizer lr/epoch/val_acc/test_acc), or {} for a
    part the study did not run (e.g. one from a backbone pretrained here)."""
    return study["parts"].get(name) or {}


def pick(study: dict, name: str, optimizer: str) -> dict:
    return part(study, name).get(optimizer) or {}


def variant(study: dict, name: str) -> dict:
    """A Table VIII row: the study's few-shot fine-tuning under one augmentation variant."""
    return study.get("augment", {}).get(name) or {}
