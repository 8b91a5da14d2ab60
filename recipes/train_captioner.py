"""Audio captioning on a trained CLAP: only the mapper is trained (the paper's captioning rows).

Launch:
    accelerate launch recipes/train_captioner.py --preset audiocaps --clap runs/clap/best \
        --train-manifest data/audiocaps/train.jsonl --test-manifest data/audiocaps/test.jsonl \
        --output-dir runs/captioner-audiocaps
    accelerate launch recipes/train_captioner.py --preset clotho --clap CLAP_weights_2023.pth ...
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
save_pretrained``), ``checkpoints/`` (atomic ``accelerator.save_state`` every
``--save-every-steps`` updates and at each epoch end; ``--resume latest`` continues exactly,
mid-epoch included), TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate.utils import gather_object, set_seed  # type: ignore[import-untyped]
from torch.utils.data import DataLoader
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from clapkit.caption import ClapCaptioner, evaluate_captions
from clapkit.data import ClapCollator, ManifestDataset, ManifestRecord, SkippedFiles, read_manifest
from clapkit.train.checkpointing import Progress, replace_folder, save_checkpoint
from clapkit.train.config import jsonable, parse_config
from clapkit.train.demo import fsdd_manifests, speech_frontend
from clapkit.train.reporting import flatten, write_report
from clapkit.train.runs import plan_run
from clapkit.train.setup import make_accelerator, setup_logging

logger = logging.getLogger("train_captioner")
REPO = Path(__file__).resolve().parent.parent
# fields that may change when a run is resumed: where it writes, how it logs, when it stops
NOT_IDENTITY = (
    "output_dir", "resume", "resume_force", "overwrite", "log_with", "torch_threads", "num_workers",
    "epochs", "eval_every", "examples", "save_every_steps",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Every setting of a run; defaults are the paper's captioner (the ``audiocaps`` preset)."""

    # Model
    clap: str | None = None
    """ClapModel folder or msclap CLAP_weights_2023.pth whose audio side is used (frozen)."""
    size: Literal["full", "tiny"] = "full"
    """tiny = smoke model: clapkit.train.demo's 8 kHz tiny CNN14, a 1-layer GPT2, word tokens."""
    language_model: str = "gpt2"
    """Hub id or folder of the pretrained GPT2 (frozen)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder (default: the language model's)."""
    prefix_length: int = 40
    mapper_depth: int = 8
    mapper_heads: int = 8
    freeze_language_model: bool = True
    # Data
    train_manifest: str | None = None
    """JSON Lines manifest of (audio, caption or captions) pairs."""
    test_manifest: str | None = None
    """Test clips with their reference captions (AudioCaps/Clotho: 5 each)."""
    references_per_item: int | None = 5
    """Enforce the 5-reference protocol (None = any number)."""
    captions_per_clip: Literal["sample", "all"] = "sample"
    """sample = one of a clip's captions per epoch; all = every caption its own training pair."""
    max_caption_tokens: int | None = 67
    """Training captions are cut to this many tokens, EOS included (None = no cut)."""
    long_audio: Literal["mean", "center"] = "mean"
    """Test clips longer than the encoder's window: mean of window embeddings, or the centre."""
    fsdd_root: str | None = None
    """Smoke data: manifests built from this Free Spoken Digit Dataset folder."""
    heldout_speaker: str = "theo"
    fsdd_clips_per_digit: int | None = None
    num_workers: int = 4
    # Optimisation
    epochs: int = 10
    lr: float = 2e-5
    warmup_steps: int = 5000
    global_batch_size: int = 40
    batch_size: int = 40
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    max_grad_norm: float | None = 1.0
    # Evaluation
    beam_size: int = 5
    max_new_tokens: int = 67
    eval_every: int = 1
    """Caption the test set every N epochs (and after the last)."""
    examples: int = 20
    # Runtime
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    seed: int = 0
    output_dir: str = "runs/train_captioner"
    save_every_steps: int = 1000
    """Checkpoint every N optimizer updates (and at every epoch end)."""
    resume: str | None = None
    """'latest' (the newest complete checkpoint) or a checkpoint folder of this run."""
    resume_force: bool = False
    """Resume although the config differs from the checkpoint's run."""
    overwrite: bool = False
    """Move a previous run in --output-dir aside instead of refusing to start."""
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    torch_threads: int | None = None


AUDIOCAPS = Config(output_dir="runs/captioner-audiocaps")
"""AudioCaps (Kim et al., NAACL 2019): 10 s AudioSet clips, one caption per training clip and
five per test clip. ClipCap's optimiser (Mokady et al. 2021: AdamW, lr 2e-5, 5000 warm-up steps,
batch 40, 10 epochs) and msclap's decoding (beam 5, up to 67 tokens; captions cut to the same
length in training). A 10 s clip is longer than the 7 s window of the 2023 encoder: training
takes a random window, the test embeds the whole clip as the mean of its windows."""
CLOTHO = dataclasses.replace(
    AUDIOCAPS, captions_per_clip="all", max_caption_tokens=40, warmup_steps=2000,
    output_dir="runs/captioner-clotho",
)  # fmt: skip
"""Clotho (Drossos et al., ICASSP 2020; v2.1: 3839 development clips): 15-30 s clips, five
captions each of 8-20 words. Every caption is a training pair (ClipCap trains on each of COCO's
five captions); 40 tokens keep a 20-word caption whole with GPT2's BPE. 5000 warm-up steps would
outlast ten epochs of the development split at batch 40 (3839 x 5 captions / 40 = 480 updates
per epoch), so the warm-up keeps AudioCaps' share of the run instead (5000 of ~12,500 updates,
40% -> 2000 of 4800). The clips are 2-4 encoder windows long: training crops one at random, the
test takes the mean of the windows (``long_audio="mean"``)."""
SMOKE = dataclasses.replace(
    AUDIOCAPS, size="tiny", fsdd_root=str(REPO / "data" / "fsdd"), fsdd_clips_per_digit=2,
    references_per_item=None, prefix_length=4, mapper_depth=1, mapper_heads=2,
    freeze_language_model=False,  # a random tiny LM knows no language: train it too
    max_caption_tokens=16, epochs=3, lr=1e-2, warmup_steps=0, batch_size=4, global_batch_size=8,
    num_workers=0, beam_size=2, max_new_tokens=10, examples=4, mixed_precision="no",
    output_dir="runs/captioner-smoke", save_every_steps=3, torch_threads=1,
)  # fmt: skip
"""FSDD digits (60 training clips, 20 test clips of a held-out speaker), a tiny random model,
3 epochs of 8 updates (accumulation 2), a checkpoint every 3 updates: the CI check."""
PRESETS = {"audiocaps": AUDIOCAPS, "clotho": CLOTHO, "smoke": SMOKE}
PRESET_NOTES = {
    "audiocaps": "Table 2 AudioCaps captioning (SPIDEr .455)",
    "clotho": "Table 2 Clotho captioning (SPIDEr .271)",
    "smoke": "FSDD, tiny model, CPU, seconds",
}


def build_captioner(cfg: Config, captions: list[str]) -> ClapCaptioner:
    """The captioner: a trained CLAP's audio side (full) or a tiny random model (smoke).

    Args:
        cfg: the settings.
        captions: every training and test caption (the tiny model's word vocabulary).

    Returns:
        The captioner, its frozen parts frozen.

    Raises:
        SystemExit: a full model without ``--clap``.
    """
    from clapkit.caption import CaptionerConfig, transformer_mapper

    if cfg.size == "tiny":
        from transformers import GPT2Config

        from clapkit.audio import cnn14_encoder
        from clapkit.train.demo import SMALL_AUDIO, SMALL_TEXT, build_word_tokenizer

        encoder = cnn14_encoder(frontend=speech_frontend(0.8), **SMALL_AUDIO["cnn14"]["tiny"])
        tokenizer = build_word_tokenizer(captions)
        lm = GPT2Config(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id, **SMALL_TEXT["tiny"],
        )  # fmt: skip
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
    from transformers import AutoModelForCausalLM

    from clapkit.core import ClapModel

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


def one_caption_each(records: list[ManifestRecord]) -> list[ManifestRecord]:
    """Every (clip, caption) pair as its own record (``--captions-per-clip all``)."""
    return [
        dataclasses.replace(r, captions=(c,), key=f"{r.key}#{j}")
        for r in records
        for j, c in enumerate(r.captions)
    ]


class TrainCaptionerRecipe:
    """The captioner's life cycle: ``setup``, ``train`` (with ``evaluate`` and
    ``save_checkpoint`` each epoch), ``cleanup``; ``setup`` resumes when ``--resume`` is given.

    Args:
        cfg: the resolved settings.
        preset: the preset's name (recorded in the report).
    """

    def __init__(self, cfg: Config, preset: str = "audiocaps") -> None:
        self.cfg, self.preset = cfg, preset
        self.out = Path(cfg.output_dir)
        self.progress, self.skipped = Progress(), SkippedFiles()

    def setup(self) -> None:
        """Accelerator, run folder, data, model, optimiser and schedule; then the resume."""
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.accelerator = accelerator = make_accelerator(
            self.out, mixed_precision=cfg.mixed_precision, log_with=cfg.log_with,
            global_batch_size=cfg.global_batch_size, batch_size=cfg.batch_size,
        )  # fmt: skip
        setup_logging(accelerator)
        plan = plan_run(
            self.out, cfg, seed=cfg.seed, resume=cfg.resume, overwrite=cfg.overwrite,
            force=cfg.resume_force, ignore=NOT_IDENTITY,
        )  # fmt: skip
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            plan.apply()
        accelerator.wait_for_everyone()
        self.run_json = plan.run_json
        set_seed(cfg.seed)
        train_manifest, test_manifest = cfg.train_manifest, cfg.test_manifest
        if cfg.fsdd_root is not None:
            train_manifest, test_manifest = fsdd_manifests(
                cfg.fsdd_root, self.out / "data", cfg.heldout_speaker, cfg.fsdd_clips_per_digit
            )
        if train_manifest is None or test_manifest is None:
            raise SystemExit("give --train-manifest and --test-manifest")
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
            num_workers=cfg.num_workers,
            # its own generator: creating the epoch's iterator draws no number from the global
            # RNG, so dropout after a mid-epoch resume sees the numbers of an unbroken run
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        trainable = [p for p in captioner.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr)
        warmup = cfg.warmup_steps
        # stepped once per optimizer update by the recipe (not prepared: accelerate would step
        # it once per process), checkpointed through register_for_checkpointing
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        prepared = accelerator.prepare(captioner, optimizer, loader)
        self.model, self.optimizer, self.train_loader = prepared
        self.captioner: ClapCaptioner = accelerator.unwrap_model(self.model)
        accelerator.register_for_checkpointing(self.scheduler, self.progress, self.skipped)
        if plan.resume_from is not None:
            accelerator.load_state(str(plan.resume_from))
            p = self.progress
            logger.info(
                "resumed from %s: epoch %d, step %d, batch %d of the epoch", plan.resume_from,
                p.epoch, p.step, p.batches_in_epoch,
            )  # fmt: skip
        if accelerator.is_main_process:
            resolved = {
                **jsonable(cfg), "preset": self.preset, "train_manifest": train_manifest,
                "test_manifest": test_manifest,
                "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
                "num_processes": accelerator.num_processes,
            }  # fmt: skip
            (self.out / "config.json").write_text(json.dumps(resolved, indent=2))
        if cfg.log_with != "none":
            config = {k: str(v) for k, v in jsonable(cfg).items()}
            accelerator.init_trackers("train_captioner", config=config)

    def train(self) -> dict[str, Any]:
        """Every remaining epoch: updates, a checkpoint every ``save_every_steps``, then the
        epoch's evaluation and end checkpoint. Returns ``{"epochs": ..., "best": ...}``."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        steps_per_epoch = math.ceil(
            len(self.train_loader) / accelerator.gradient_accumulation_steps
        )
        bar = tqdm(
            total=cfg.epochs * steps_per_epoch, initial=progress.step, unit="step",
            disable=not accelerator.is_local_main_process,
        )  # fmt: skip
        while progress.epoch < cfg.epochs:
            epoch, started = progress.epoch, time.perf_counter()
            self.train_set.set_epoch(epoch)
            self.train_loader.set_epoch(epoch)  # the seedable sampler's order of this epoch
            loader = self.train_loader
            if progress.batches_in_epoch:  # resumed mid-epoch: the rest of the same order
                loader = accelerator.skip_first_batches(loader, progress.batches_in_epoch)
            self.model.train()
            for batch in loader:
                progress.batches_in_epoch += 1
                self.skipped.update(batch["skipped"])
                if not batch["captions"]:
                    continue
                with accelerator.accumulate(self.model), accelerator.autocast():
                    ids = self.captioner.tokenize_captions(
                        batch["captions"], max_tokens=cfg.max_caption_tokens
                    )
                    loss = self.model(batch["waveform"], **ids).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(self.captioner.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                progress.loss_sum += loss.item()  # in Progress: a resumed epoch averages all
                progress.loss_count += 1
                if not accelerator.sync_gradients:
                    continue
                self.scheduler.step()
                progress.step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                accelerator.log(
                    {"train/loss": loss.item(), "train/lr": self.scheduler.get_last_lr()[0]},
                    step=progress.step,
                )
                if progress.step % cfg.save_every_steps == 0:
                    self.save_checkpoint(f"step_{progress.step:08d}")
            self.end_epoch(epoch, started)
        bar.close()
        return {"epochs": progress.history, "best": progress.best}

    def end_epoch(self, epoch: int, started: float) -> None:
        """The epoch's record (train loss, test metrics), ``best/``, its end checkpoint."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        mean = torch.tensor(
            progress.loss_sum / max(progress.loss_count, 1), device=accelerator.device
        )
        record: dict[str, Any] = {"epoch": epoch, "step": progress.step,
                                  "train_loss": float(accelerator.reduce(mean, "mean")),
                                  "lr": self.scheduler.get_last_lr()[0]}  # fmt: skip
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            scores, missing, examples = self.evaluate()
            record[self.task], record["missing_metrics"] = scores, missing
            if progress.best is None or scores["score"] > progress.best["score"]:
                progress.best = {**record, "score": scores["score"]}
                if accelerator.is_main_process:
                    self.save_best(examples)
        record["seconds"] = time.perf_counter() - started
        progress.history.append(record)
        accelerator.log({f"epoch/{k}": v for k, v in flatten(record).items()}, step=progress.step)
        logger.info("epoch %d: %s", epoch, json.dumps(flatten(record)))
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        progress.loss_sum, progress.loss_count = 0.0, 0
        self.save_checkpoint(f"step_{progress.step:08d}_end")
        if accelerator.is_main_process:
            history, best = progress.history, progress.best
            write_report(self.out, title="train_captioner report", summary=self.summary(),
                         history=history, best=best, skipped=self.skipped)  # fmt: skip

    def evaluate(self) -> tuple[dict[str, float], dict[str, str], list[dict[str, Any]]]:
        """Caption the test clips (whole files, long ones as the mean of their windows, each
        process its share) and score them against their references.

        Returns:
            The corpus metrics plus ``score`` (SPIDEr, or CIDEr-D without Java), the metrics
            left out with why, and the first ``examples`` captions with their references.
        """
        cfg, accelerator = self.cfg, self.accelerator
        records = self.test_records
        with accelerator.split_between_processes(list(range(len(records)))) as share:
            audio = [records[i].audio for i in share]
            captions = self.captioner.generate(
                audio, beam_size=cfg.beam_size, max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size, long_audio=cfg.long_audio,
            ) if audio else []  # fmt: skip
            part = list(zip(share, captions, strict=True))
        pairs = dict(gather_object(part)) if accelerator.num_processes > 1 else dict(part)
        predictions = [pairs[i] for i in range(len(records))]
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
        """``best/`` (written aside, then swapped in) and ``examples.jsonl``."""
        staged = self.out / ".best.partial"
        if staged.exists():
            shutil.rmtree(staged)
        self.captioner.save_pretrained(staged)
        replace_folder(staged, self.out / "best")
        (self.out / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))

    def save_checkpoint(self, name: str) -> None:
        """Atomic ``accelerator.save_state`` (model, optimiser, RNG, sampler, scheduler,
        progress, skipped files) as ``checkpoints/NAME``, with ``run.json`` beside it."""
        files = {"run.json": self.run_json}
        folder = save_checkpoint(self.accelerator, self.out / "checkpoints" / name, files=files)
        logger.info("checkpoint saved: %s", folder.name)

    def summary(self) -> list[str]:
        """The report's lines under its heading."""
        cfg = self.cfg
        return [
            f"Preset `{self.preset}`, size {cfg.size}, seed {cfg.seed}; test set `{self.task}`.",
            f"Command: `accelerate launch recipes/train_captioner.py {' '.join(sys.argv[1:])}`",
        ]

    def cleanup(self) -> None:
        """End the trackers and the process group."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def main(argv: list[str]) -> dict[str, Any]:
    """Parse the command line, train, clean up; returns metrics.json's epochs and best."""
    preset, cfg = parse_config(Config, PRESETS, argv, default="audiocaps", description=__doc__,
                               notes=PRESET_NOTES)  # fmt: skip
    recipe = TrainCaptionerRecipe(cfg, preset)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
