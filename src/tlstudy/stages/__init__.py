"""The stages of dvc.yaml, a module each: what `python -m tlstudy.stage` runs (stage.MODULES)."""
