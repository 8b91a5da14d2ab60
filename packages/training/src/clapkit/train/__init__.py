"""clapkit.train: what the recipes share (torchtune's ``training`` package, for clapkit).

Modules (import them by name; this file imports nothing heavy):

- :mod:`clapkit.train.config`: presets + typed overrides (``parse_config``), config hash/diff.
- :mod:`clapkit.train.setup`: the ``Accelerator`` (accumulation to the global batch), logging,
  gradient checkpointing.
- :mod:`clapkit.train.runs`: run folders that never mix (``plan_run``: ``--resume``,
  ``--overwrite``, ``run.json``).
- :mod:`clapkit.train.checkpointing`: atomic checkpoints, ``find_checkpoint`` (newest
  complete), ``verify_checkpoint``, ``replace_folder``.
- :mod:`clapkit.train.evaluation`: per-epoch zero-shot tasks and scores (clap-core's path).
- :mod:`clapkit.train.throughput`: samples/s, data wait vs compute, TFLOP/s.
- :mod:`clapkit.train.reporting`: metrics.json, report.md, history.csv, curves.png, model card.
- :mod:`clapkit.train.plots`: evaluation figures (confusion matrices, clapkit-vs-paper bars).
- :mod:`clapkit.train.demo`: the FSDD demo data, small encoders, 8 kHz speech front end.
"""

__all__: list[str] = []
