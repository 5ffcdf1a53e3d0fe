"""YAML as DVC reads it: YAML 1.2, through ruamel.yaml's safe loader, which is what DVC itself
uses for params.yaml. PyYAML reads YAML 1.1, where `1e-3` is a string and `yes` is true; a
params file, a profile overlay and a `--set` value must mean to every stage what they mean to
`dvc exp run -S` and `dvc params diff`, so the project reads and writes YAML here only."""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml import YAMLError as YAMLError  # re-exported: callers catch it from here


def load(text: str) -> Any:
    """A YAML 1.2 document as plain Python values (dicts, lists, str, int, float, bool, None)."""
    return YAML(typ="safe", pure=True).load(text)


def dump(obj: Any, width: int = 120) -> str:
    """Block-style YAML 1.2 that `load` (and DVC) read back as the same values, keys in order."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    yaml.width = width
    out = io.StringIO()
    yaml.dump(obj, out)
    return out.getvalue()
