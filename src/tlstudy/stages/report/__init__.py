"""Stage `report`: `report/README.md` and its PNG figures, regenerated from the pipeline's
details, curves, predictions and run records — no model is loaded, so it takes seconds.

By concern: inputs.py (what it reads), study.py (the study's own numbers), verdicts.py (the tested
statements: each pair of optimizers, the placement hypothesis), tables.py (Markdown), figures.py (PNG) and
document.py (the sections, in order)."""

from tlstudy.stages.report.document import run
from tlstudy.stages.report.verdicts import hypothesis

__all__ = ["run", "hypothesis"]
