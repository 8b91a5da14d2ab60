"""The recipes' settings: one frozen dataclass per recipe, its paper presets and their notes.

- :mod:`clapkit.train.presets.clap`: contrastive pretraining (``recipes/pretrain_clap.py``),
  Tables 1 and 2 of arXiv 2309.05767, ``demo`` and ``smoke``.
- :mod:`clapkit.train.presets.captioning`: the captioner (``recipes/train_captioner.py``),
  Table 2's AudioCaps and Clotho captioning rows, ``smoke``.
- :mod:`clapkit.train.presets.htsat22`: HTSAT-22 pretraining (``recipes/pretrain_htsat22.py``),
  ``pengi-22`` (the 22 Pengi task families) and ``smoke``.
- :mod:`clapkit.train.presets.finetune`: fine-tuning and linear probes
  (``recipes/finetune_audio.py``), ``esc50`` (the paper's 96.70% -> 98.25%) and ``smoke``.

Presets are plain instances of the dataclass (``dataclasses.replace`` of the paper's defaults);
``clapkit.train.config.parse_config`` picks one and applies the command-line overrides.
"""

__all__: list[str] = []
