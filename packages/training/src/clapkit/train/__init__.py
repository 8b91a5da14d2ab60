"""clapkit.train: what the recipes share (torchtune's ``training`` package, for clapkit).

Accelerator and logging setup, run folders that never mix and atomic checkpoints with exact
resume, throughput figures, the run report and curves, the FSDD demo data and small encoders.
A recipe (``recipes/*.py``) is a class with one life cycle built on these pieces.
"""

__all__: list[str] = []
