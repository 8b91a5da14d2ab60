"""Audio captioning on a trained CLAP: only the mapper is trained (the paper's captioning rows).

Launch:
    accelerate launch recipes/train_captioner.py --preset audiocaps --clap runs/clap/best \
        --train-manifest data/audiocaps/train.jsonl --test-manifest data/audiocaps/test.jsonl \
        --output-dir runs/captioner-audiocaps
    accelerate launch recipes/train_captioner.py --preset clotho --clap CLAP_weights_2023.pth \
        --data clotho=/data/clotho     # Clotho v2.1 as published: development / evaluation
    accelerate launch --cpu recipes/train_captioner.py --preset smoke   # the CI check (FSDD)

Reproduces: Elizalde, Deshmukh, Wang (arXiv 2309.05767), Table 2, "AudioCaps captioning" and
"Clotho captioning" (SPIDEr .455 and .271): the CLAP audio encoder and GPT2 are frozen; the
mapper (msclap's clapcap architecture: 40-token prefix, 8 layers) learns from the task's
training captions with the captioning loss (Eq. 5); test clips are captioned by beam search
(beam 5, up to 67 tokens) and scored with the 5-reference protocol. The paper does not give
the mapper's optimiser settings; the defaults follow ClipCap (AdamW, lr 2e-5, 5000 warm-up
steps, batch 40, 10 epochs).

``--clap`` is a clapkit ``ClapModel`` folder (``save_pretrained``) or an msclap checkpoint
(``CLAP_weights_2023.pth``). Any `Config` field is a command-line override; ``--preset NAME``
picks the starting values. Outputs: ``run.json``, ``config.json``, ``metrics.json`` (per epoch:
train loss and the test set's caption metrics), ``report.md``, ``history.csv``, ``curves.png``,
``examples.jsonl`` (test captions of the best epoch), ``best/`` (``ClapCaptioner.
save_pretrained``), ``checkpoints/`` (atomic checkpoints (JSON + safetensors) every
``--save-every-steps`` updates and at each epoch end; ``--resume latest`` continues exactly,
mid-epoch included), TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from clapkit.caption import (
    CaptionerConfig,
    ClapCaptioner,
    evaluate_captions,
    transformer_mapper,
)
from clapkit.core import ClapModel
from clapkit.data import ClapCollator, ManifestDataset, ManifestRecord, read_manifest
from clapkit.data.tasks import split_manifests
from clapkit.train.checkpointing import (
    full_state_dict,
    save_whole_pretrained,
    written_aside,
)
from clapkit.train.demo import fsdd_manifests
from clapkit.train.loaders import loader_options
from clapkit.train.presets.captioning import (
    PRESET_NOTES,
    RESUMABLE_CHANGES,
    Config,
    captioning_presets,
)
from clapkit.train.recipe import TrainingRecipe
from clapkit.train.reporting import write_report
from clapkit.train.setup import linear_warmup
from clapkit.train.shares import map_shares
from clapkit.train.small import (
    build_word_tokenizer,
    small_audio_encoder,
    small_gpt2_config,
    speech_frontend,
)
from clapkit.train.steps import update_groups

PRESETS = captioning_presets(fsdd_root=str(Path(__file__).parents[1] / "data" / "fsdd"))


def one_caption_each(records: list[ManifestRecord]) -> list[ManifestRecord]:
    """Every (clip, caption) pair as its own record (``--captions-per-clip all``)."""
    return [
        dataclasses.replace(r, captions=(c,), key=f"{r.key}#{j}")
        for r in records
        for j, c in enumerate(r.captions)
    ]


def build_captioner(cfg: Config, captions: list[str]) -> ClapCaptioner:
    """The captioner: a trained CLAP's audio side (full) or a tiny random model (smoke).

    Args:
        cfg: the run's settings.
        captions: every training and test caption (the tiny model's word vocabulary).

    Returns:
        The captioner, its frozen parts frozen.

    Raises:
        SystemExit: a full model without ``--clap``.
    """
    if cfg.demo.size == "tiny":
        encoder = small_audio_encoder("cnn14", "tiny", speech_frontend(0.8))
        tokenizer = build_word_tokenizer(captions)
        lm = small_gpt2_config("tiny", tokenizer)
        width = lm.n_embd
        mapper = transformer_mapper(
            embed_dim=width, prefix_length=cfg.prefix_length, width=width, depth=cfg.mapper_depth,
            num_heads=cfg.mapper_heads,
        )  # fmt: skip
        config = CaptionerConfig(
            audio=encoder.get_config(), mapper=mapper.get_config(), language_model=lm.to_dict(),
            projection="linear", projection_dim=width,
            freeze_language_model=cfg.freeze_language_model,
        )  # fmt: skip
        return ClapCaptioner(config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper)
    if cfg.clap is None:
        raise SystemExit("--clap is required: a ClapModel folder or msclap CLAP_weights_2023.pth")
    tokenizer_source = cfg.tokenizer or cfg.language_model
    if Path(cfg.clap).is_dir():
        clap = ClapModel.from_pretrained(cfg.clap)
    else:
        clap = ClapModel.from_msclap(cfg.clap, version="2023", tokenizer=tokenizer_source)
    language_model = AutoModelForCausalLM.from_pretrained(cfg.language_model)
    mapper = transformer_mapper(
        embed_dim=clap.config.projection_dim, prefix_length=cfg.prefix_length,
        width=int(language_model.config.hidden_size), depth=cfg.mapper_depth,
        num_heads=cfg.mapper_heads,
    )  # fmt: skip
    return ClapCaptioner.from_clap(
        clap, tokenizer=tokenizer_source, language_model=language_model, mapper=mapper,
        freeze_language_model=cfg.freeze_language_model,
    )  # fmt: skip


class TrainCaptionerRecipe(TrainingRecipe[Config]):
    """The captioner's life cycle: ``setup``, ``train`` (with ``evaluate`` and
    ``save_checkpoint`` each epoch), ``cleanup`` (``clapkit.train.recipe.TrainingRecipe``);
    ``setup`` resumes when ``--resume`` is given.

    Args:
        cfg: the resolved settings.
        preset: the preset's name (recorded in the report).
    """

    resumable_changes = RESUMABLE_CHANGES
    hub_pipeline_tag = "audio-text-to-text"
    config_class, presets, default_preset, notes = Config, PRESETS, "audiocaps", PRESET_NOTES

    def setup(self) -> None:
        """Accelerator, run folder, data, model, optimiser and schedule; then the resume."""
        cfg = self.cfg
        accelerator = self.accelerator
        train_manifest, test_manifest = cfg.train_manifest, cfg.test_manifest
        if cfg.data is not None:  # the publisher's layout: training and test splits
            train_manifest, test_manifest = split_manifests(cfg.data, self.out / "data")
        elif cfg.demo.fsdd_root is not None:
            train_manifest, test_manifest = fsdd_manifests(
                cfg.demo.fsdd_root,
                self.out / "data",
                cfg.demo.heldout_speaker,
                cfg.demo.clips_per_digit,
            )
        if train_manifest is None or test_manifest is None:
            raise SystemExit("give --data NAME=PATH, or --train-manifest and --test-manifest")
        train_records, self.test_records = map(read_manifest, (train_manifest, test_manifest))
        self.task = Path(test_manifest).stem
        captions = [c for r in [*train_records, *self.test_records] for c in r.captions]
        captioner = build_captioner(cfg, captions)
        if cfg.captions_per_clip == "all":
            train_records = one_caption_each(train_records)
        self.train_set = ManifestDataset(
            train_records, captioner.audio_encoder.frontend, train=True, seed=cfg.seed
        )
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=ClapCollator(),
            **loader_options(cfg.num_workers),
            # its own generator: creating the epoch's iterator draws no number from the global
            # RNG, so dropout after a mid-epoch resume sees the numbers of an unbroken run
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        trainable = [p for p in captioner.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, **self.optimizer_options())
        # stepped once per optimizer update by the recipe, checkpointed by resume()
        self.scheduler = linear_warmup(optimizer, cfg.warmup_steps)
        prepared = accelerator.prepare(captioner, optimizer, loader)
        self.model, self.optimizer, self.train_loader = prepared
        self.captioner: ClapCaptioner = accelerator.unwrap_model(self.model)
        self.resume(self.scheduler)
        self.write_config(train_manifest=train_manifest, test_manifest=test_manifest)

    def train(self) -> dict[str, Any]:
        """Every remaining epoch: updates, a checkpoint every ``save_every_steps``, then the
        epoch's evaluation and end checkpoint. Returns ``{"epochs": ..., "best": ...}``."""
        cfg, progress = self.cfg, self.progress
        bar = self.progress_bar(cfg.epochs)
        while progress.epoch < cfg.epochs:
            epoch, started = progress.epoch, time.perf_counter()
            self.model.train()
            batches = self.epoch_batches(self.train_set, self.train_loader, needs="captions")
            for group in update_groups(batches, self.micro_steps):
                loss = self.update(group, self.loss_step)
                self.scheduler.step()
                self.step_done(bar, loss, self._figures, epoch=epoch)
            self.end_epoch(epoch, started)
        bar.close()
        return {"epochs": progress.history, "best": progress.best}

    def _figures(self) -> dict[str, float]:
        """What a log step records beside the loss."""
        return {"lr": float(self.scheduler.get_last_lr()[0])}

    def loss_step(self, batch: dict[str, Any]) -> Any:
        """The captioning loss of a batch (cross-entropy on its caption tokens)."""
        ids = self.captioner.tokenize_captions(
            batch["captions"], max_tokens=self.cfg.max_caption_tokens
        )
        return self.model(batch["waveform"], **ids).loss

    def end_epoch(self, epoch: int, started: float) -> None:
        """The epoch's record (train loss, test metrics), ``best/``, its end checkpoint."""
        cfg, progress = self.cfg, self.progress
        record = self.epoch_record(lr=self.scheduler.get_last_lr()[0])
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            scores, missing, examples = self.evaluate()
            record[self.task], record["missing_metrics"] = scores, missing
            if progress.best is None or scores["score"] > progress.best["score"]:
                progress.best = {**record, "score": scores["score"]}
                self.save_best(examples)
        record["seconds"] = time.perf_counter() - started
        self.close_epoch(record)
        if self.accelerator.is_main_process:
            history, best = progress.history, progress.best
            write_report(self.out, title="train_captioner report", summary=self.summary(),
                         history=history, best=best, skipped=self.skipped, score_column=None,
                         loss_title="captioning loss", score_title=f"{self.task}: SPIDEr "
                         "(CIDEr-D without Java)", score_range=None)  # fmt: skip

    def evaluate(self) -> tuple[dict[str, float], dict[str, str], list[dict[str, Any]]]:
        """Caption the test clips (whole files, long ones as the mean of their windows, each
        process its share) and score them against their references.

        Returns:
            The corpus metrics plus ``score`` (SPIDEr, or CIDEr-D without Java), the metrics
            left out with why, and the first ``examples`` captions with their references.
        """
        cfg, accelerator = self.cfg, self.accelerator
        records = self.test_records

        def caption(share: list[int]) -> list[str]:
            return self.captioner.generate(
                [records[i].audio for i in share], beam_size=cfg.beam_size,
                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                long_audio=cfg.long_audio,
            )  # fmt: skip

        predictions = [
            c for part in map_shares(accelerator, range(len(records)), caption) for c in part
        ]
        references = [list(r.captions) for r in records]
        scores = evaluate_captions(
            predictions, references, references_per_item=cfg.references_per_item
        )
        corpus = dict(scores.corpus)
        corpus["score"] = corpus.get("spider", corpus["cider_d"])
        examples = [
            {"key": r.key, "audio": str(r.audio), "prediction": p, "references": refs}
            for r, p, refs in zip(records, predictions, references, strict=True)
        ]
        return corpus, dict(scores.missing), examples[: cfg.examples]

    def save_best(self, examples: list[dict[str, Any]]) -> None:
        """``best/`` (written aside, then swapped in) and ``examples.jsonl``; call on every
        process (under FSDP they gather the whole weights), the main one writes."""
        state = full_state_dict(self.accelerator, self.model)
        if not self.accelerator.is_main_process:
            return
        with written_aside(self.out / "best") as staged:
            save_whole_pretrained(self.captioner, staged, state, tokenizer=self.captioner.tokenizer)
        (self.out / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))

    def summary(self) -> list[str]:
        """The report's lines under its heading."""
        cfg = self.cfg
        return [
            f"Preset `{self.preset}`, size {cfg.demo.size}, seed {cfg.seed}; "
            f"test set `{self.task}`.",
            f"Command: `{self.command()}`",
        ]


main = TrainCaptionerRecipe.main
"""Parse the command line, run the recipe's life cycle, return what its ``train`` returns."""

if __name__ == "__main__":
    main()
