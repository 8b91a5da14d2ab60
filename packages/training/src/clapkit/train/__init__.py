"""clapkit.train: what the recipes share (torchtune's ``training`` package, for clapkit).

Modules (import them by name; this file imports nothing heavy):

- :mod:`clapkit.train.recipe`: ``TrainingRecipe``, the life cycle every training recipe shares
  (start, resume, epoch batches, micro-steps, checkpoints, records, cleanup, ``main``).
- :mod:`clapkit.train.presets`: each recipe's config dataclass, presets and notes.
- :mod:`clapkit.train.config`: presets + typed overrides (``parse_config``), config hash/diff.
- :mod:`clapkit.train.setup`: the ``Accelerator`` (accumulation to the global batch), logging,
  gradient checkpointing, the warm-up schedule.
- :mod:`clapkit.train.runs`: run folders that never mix (``plan_run``: ``--resume``,
  ``--overwrite``, ``run.json``).
- :mod:`clapkit.train.checkpointing`: atomic checkpoints, ``load_checkpoint``,
  ``find_checkpoint`` (newest complete), ``verify_checkpoint``, ``replace_folder``,
  ``written_aside``; :mod:`clapkit.train.state` (the training state as JSON + safetensors, nothing
  pickled), :mod:`clapkit.train.integrity` (``COMPLETE``: sizes and sha256s; pickles refused),
  :mod:`clapkit.train.write_errors` (disk full, quota, read-only, named).
- :mod:`clapkit.train.preemption`: SIGTERM / SIGUSR1 / SIGINT -> finish the update, save, exit.
- :mod:`clapkit.train.evaluation`: per-epoch zero-shot tasks and scores (clap-core's path).
- :mod:`clapkit.train.throughput`: samples/s, data wait vs compute, TFLOP/s.
- :mod:`clapkit.train.reporting`: metrics.json, report.md, history.csv, curves.png, model card.
- :mod:`clapkit.train.plots`: evaluation figures (confusion matrices, clapkit-vs-paper bars).
- :mod:`clapkit.train.loop`: the loop's bookkeeping (epoch batches, updates, loss reads, epoch
  records); :mod:`clapkit.train.steps`: micro-batch groups, accumulation, the optimizer step.
- :mod:`clapkit.train.shares`: work split over processes and gathered back in order.
- :mod:`clapkit.train.demo`: the demo's settings and FSDD data (contrastive and multi-task),
  the encoders of a contrastive run at any size; :mod:`clapkit.train.small`: every small model.
- :mod:`clapkit.train.contrastive`: dropout off, FLOPs per sample; :mod:`clapkit.train.loaders`:
  training loaders (manifests, tar shards per rank and worker, persistent workers).
- :mod:`clapkit.train.finetuning`, :mod:`clapkit.train.folds`, :mod:`clapkit.train.augment`,
  :mod:`clapkit.train.finetune_report`: fine-tuning and linear probes, cross-validated.
- :mod:`clapkit.train.suite`: ``evaluate.py``'s task resolution, cache and report.
"""

__all__: list[str] = []
