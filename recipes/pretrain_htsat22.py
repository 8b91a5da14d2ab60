"""HTSAT-22: an audio encoder trained on 22 audio tasks the Pengi way (audio -> text generation).

Launch:
    accelerate launch --config_file recipes/configs/ddp.yaml recipes/pretrain_htsat22.py \
        --preset pengi-22 --train-manifest data/pengi22/train.jsonl \
        --eval-manifest data/pengi22/eval.jsonl --output-dir runs/htsat22
    accelerate launch --cpu recipes/pretrain_htsat22.py --preset smoke   # the CI check (FSDD)

Reproduces: Elizalde, Deshmukh, Wang (arXiv 2309.05767), section 2, "HTSAT-22": HTS-AT (tiny,
unchanged) trained on 22 audio tasks as in Pengi (Deshmukh et al., arXiv 2305.11834): the audio
encoder (trained) -> msclap projection to 1024 -> L2 normalise -> a 40-token 8-layer transformer
mapper -> the prefix of a frozen GPT2, which reads ``[audio prefix][task prompt][answer]``; the
loss is the cross-entropy of the answer tokens (Eq. 5). The encoder it produces is the audio
side of Table 1's HTSAT-22 rows: ``best/audio_encoder.safetensors`` loads strictly with
``clapkit.audio.htsat_22(weights=...)`` and ``recipes/pretrain_clap.py --audio-weights ...``.
Front end (the paper's): 44.1 kHz, random 7 s crops, 64 mel, window 1024, hop 320, 50-8000 Hz.
The paper gives neither the 22 tasks nor the optimiser of this stage: the task families are
Pengi's (see `PENGI_22` and recipes/README.md), the optimiser is the paper's Adam with Pengi's
settings where known and ours where not (each `Config` field says which).

The training data is a multi-task manifest (``clapkit.data.multitask``: one ``{"audio", "task",
"prompt", "answer"}`` line per pair; build it from the datasets' training splits with
``classification_records`` / ``caption_records`` / ``qa_records`` / ``task_records``), drawn per
epoch with ``--task-weights NAME=W ...`` (default: a share proportional to each task's size). The
eval manifest (same format) is answered by greedy decoding each epoch: exact-match accuracy per
task; the epoch with the best mean accuracy is kept (without one, the lowest training loss).

Outputs: ``run.json``, ``config.json``, ``metrics.json``, ``report.md``, ``history.csv``,
``curves.png``, ``best/`` (``audio_encoder.safetensors``, ``prefix_lm/`` = the whole model as
``PrefixLanguageModel.save_pretrained``, ``README.md``), ``checkpoints/`` (atomic
``accelerator.save_state`` every ``--save-every-steps`` updates and at each epoch end;
``--resume latest`` continues exactly, mid-epoch included), TensorBoard logs.
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

from clapkit.audio import save_weights
from clapkit.caption import PrefixLanguageModel
from clapkit.data import (
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskRecord,
    SkippedFiles,
    WeightedTaskSampler,
    classification_records,
    read_manifest,
    read_multitask_manifest,
    write_multitask_manifest,
)
from clapkit.train.checkpointing import Progress, replace_folder, save_checkpoint
from clapkit.train.config import jsonable, parse_config
from clapkit.train.demo import (
    SMALL_AUDIO,
    SMALL_TEXT,
    build_word_tokenizer,
    fsdd_manifests,
    speech_frontend,
)
from clapkit.train.reporting import flatten, write_report
from clapkit.train.runs import plan_run
from clapkit.train.setup import enable_grad_checkpointing, make_accelerator, setup_logging
from clapkit.train.throughput import ThroughputMeter, count_flops

logger = logging.getLogger("pretrain_htsat22")
REPO = Path(__file__).resolve().parent.parent
RECIPE = "recipes/pretrain_htsat22.py"
# fields that may change when a run is resumed: where it writes, how it logs, when it stops
NOT_IDENTITY = (
    "output_dir", "resume", "resume_force", "overwrite", "log_with", "torch_threads", "num_workers",
    "epochs", "eval_every", "save_every_steps",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Every setting of a run; defaults are the paper's HTSAT-22 (the ``pengi-22`` preset)."""

    # Model
    audio: str = "htsat-22"
    """Audio encoder (registry name); htsat-22 = HTS-AT tiny with the paper's front end."""
    size: Literal["full", "tiny"] = "full"
    """tiny = the smoke model: a 2-stage HTSAT at 8 kHz, a 1-layer GPT2 with word tokens."""
    audio_weights: str | None = None
    """Start the encoder from these weights (e.g. HTS-AT AudioSet); None = scratch (Pengi)."""
    spec_augment: bool = False
    """SpecAugment in the encoder (Pengi: off)."""
    language_model: str = "gpt2"
    """Hub id or folder of the causal LM (frozen; the paper: GPT2 base); with size tiny, the
    size of the random GPT2 of clapkit.train.demo (``tiny`` or ``small``)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder (default: the language model's)."""
    freeze_language_model: bool = True
    projection: Literal["msclap", "mlp", "linear"] = "msclap"
    projection_dim: int = 1024
    projection_dropout: float = 0.5
    normalize_prefix: bool = True
    """L2-normalise the projected embedding before the mapper (Pengi: yes)."""
    prefix_length: int = 40
    """Audio prefix tokens (Pengi: 40)."""
    mapper: Literal["transformer", "mlp"] = "transformer"
    """Pengi's (and clapcap's) transformer mapper, or ClipCap's MLP mapper."""
    mapper_depth: int = 8
    mapper_heads: int = 8
    # Data
    train_manifest: str | None = None
    """Multi-task manifest (clapkit.data.multitask) of the training pairs."""
    eval_manifest: str | None = None
    """Multi-task manifest answered each epoch (exact-match accuracy per task)."""
    task_weights: tuple[str, ...] = ()
    """NAME=WEIGHT per task: its share of an epoch's draws (default: its size)."""
    samples_per_epoch: int | None = None
    """Draws per epoch over all processes (default: the number of training pairs)."""
    clip_seconds: float = 7.0
    """Training crop (paper: random 7 s segments, shorter audio padded)."""
    max_answer_tokens: int = 77
    """Answers cut to this many tokens, EOS included (Pengi: 77)."""
    cache_audio: bool = False
    on_error: Literal["skip", "raise"] = "skip"
    num_workers: int = 4
    fsdd_root: str | None = None
    """Smoke data: the two FSDD tasks built from this folder (which digit, which speaker)."""
    heldout_speaker: str = "theo"
    fsdd_clips_per_digit: int | None = None
    # Optimisation (Adam: the paper; the rest is ours, the paper and Pengi's code are silent)
    epochs: int = 30
    lr: float = 1e-4
    warmup_steps: int = 2000
    global_batch_size: int = 384
    batch_size: int = 48
    """Per-process micro-batch; accumulation = global / (batch_size * processes)."""
    max_grad_norm: float | None = 1.0
    # Evaluation
    max_new_tokens: int = 16
    eval_every: int = 1
    # Runtime
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    grad_checkpointing: bool = False
    seed: int = 0
    output_dir: str = "runs/pretrain_htsat22"
    save_every_steps: int = 2000
    resume: str | None = None
    """'latest' (the newest complete checkpoint) or a checkpoint folder of this run."""
    resume_force: bool = False
    overwrite: bool = False
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    torch_threads: int | None = None


# The 22 task families: (name, prompt, answer, training data). The paper names none of them;
# these are Pengi's families (Deshmukh et al., arXiv 2305.11834, Table 1 prompts; "generate
# audio caption", "generate metadata" and "this is a sound of" are in Pengi's released code,
# the other prompts are ours in Pengi's style). A dataset that is also a Table 1 zero-shot task
# (ESC-50, US8K, ...) trains here on its training split only; leaving such families out
# (``--task-weights NAME=0``) keeps that column strictly zero-shot: the paper does not say.
PENGI_22: tuple[tuple[str, str, str, str], ...] = (
    ("audioset", "this is a sound of", "its labels", "AudioSet balanced + unbalanced train"),
    ("fsd50k", "this is a sound of", "its labels", "FSD50K dev"),
    ("esc50", "this is a sound of", "class", "ESC-50 (folds not tested)"),
    ("us8k", "this is a sound of", "class", "UrbanSound8K (folds not tested)"),
    ("dcase17-t4", "this is a sound of", "its labels", "DCASE 2017 task 4 training"),
    ("scenes", "this acoustic scene is", "scene", "TUT2017 development, CochlScene train"),
    ("vocalsound", "this vocal sound is", "class", "VocalSound train"),
    ("audiocaps", "generate audio caption", "caption", "AudioCaps train"),
    ("clotho", "generate audio caption", "caption", "Clotho development"),
    ("metadata", "generate metadata", "description", "WavText5K, SoundDescs, MACS"),
    ("clotho-aqa", "question: {question}", "answer", "Clotho-AQA train"),
    ("music-genre", "this music genre is", "genre", "GTZAN (not tested), FMA"),
    ("music-speech", "this is music or speech", "music/speech", "GTZAN music/speech"),
    ("nsynth-instrument", "this music instrument is", "family", "NSynth train"),
    ("nsynth-pitch", "this music note is", "pitch", "NSynth train"),
    ("nsynth-velocity", "this music note velocity is", "velocity", "NSynth train"),
    ("nsynth-qualities", "this music note sounds", "its qualities", "NSynth train"),
    ("percussion", "this percussion instrument is", "class", "Beijing Opera percussion"),
    ("emotion", "this emotion is", "emotion", "CREMA-D, RAVDESS, IEMOCAP, MSP-Podcast train"),
    ("sentiment", "this speech sentiment is", "sentiment", "CMU-MOSI, CMU-MOSEI, MELD train"),
    ("keyword", "this spoken word is", "keyword", "Speech Commands v2 train"),
    ("speaker-count", "the number of speakers is", "count", "LibriCount train"),
)

PENGI22 = Config(output_dir="runs/htsat22")
SMOKE = dataclasses.replace(
    PENGI22, size="tiny", language_model="small", fsdd_root=str(REPO / "data" / "fsdd"),
    fsdd_clips_per_digit=8,
    projection_dim=32, projection_dropout=0.0, mapper="mlp", prefix_length=4,
    freeze_language_model=False,  # a random tiny LM knows no language: train it too
    task_weights=("digit=3", "speaker=1"), samples_per_epoch=320, clip_seconds=0.8,
    max_answer_tokens=4, cache_audio=True, num_workers=0, epochs=6, lr=3e-3, warmup_steps=0,
    global_batch_size=32, batch_size=16, max_new_tokens=3, mixed_precision="no",
    output_dir="runs/htsat22-smoke", save_every_steps=4, torch_threads=1,
)  # fmt: skip
"""FSDD (3 speakers x 10 digits x 8 clips, two tasks: which digit, weight 3; which speaker,
weight 1), a 2-stage HTSAT at 8 kHz (``--audio cnn14``: clapkit.train.demo's small CNN14),
clapkit.train.demo's small GPT2 (2 layers, width 64, word tokens, trained too), 6 epochs of 10
updates (accumulation 2). ClipCap's MLP mapper instead of Pengi's transformer: from a random
start the transformer mapper's prefix hardly depends on the audio for the first ~100 updates
(the loss sits at the answers' prior), longer than a CI run."""
PRESETS = {"pengi-22": PENGI22, "smoke": SMOKE}
NOTES = {
    "pengi-22": f"HTSAT-22 pretraining on the {len(PENGI_22)} Pengi task families (a multi-task "
    "manifest); its encoder feeds Table 1's HTSAT-22 rows (avg .454-.480)",
    "smoke": "FSDD: which digit + which speaker on 3 speakers, tiny model, CPU, seconds",
}


def parse_weights(pairs: tuple[str, ...]) -> dict[str, float] | None:
    """``("esc50=1", "clotho=2.5")`` -> ``{"esc50": 1.0, "clotho": 2.5}`` (``()`` -> None)."""
    if not pairs:
        return None
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SystemExit(f"--task-weights: {pair!r} is not NAME=NUMBER") from None
    return weights


def fsdd_multitask_manifests(
    root: str, out: Path, heldout_speaker: str, clips_per_digit: int | None
) -> tuple[str, str]:
    """The smoke data: "which digit" and "which speaker" on three FSDD speakers (train) and
    "which digit" on the fourth (eval), built with ``clapkit.data``'s builders."""
    train, heldout = fsdd_manifests(root, out, heldout_speaker, clips_per_digit)
    clips = read_manifest(train)
    speakers = [dataclasses.replace(r, labels=(str(r.extra["speaker"]),)) for r in clips]
    records = classification_records(clips, task="digit", prompt="which digit")
    records += classification_records(speakers, task="speaker", prompt="which speaker")
    test = classification_records(read_manifest(heldout), task="digit", prompt="which digit")
    paths = out / "multitask_train.jsonl", out / f"multitask_heldout_{heldout_speaker}.jsonl"
    write_multitask_manifest(records, paths[0])
    write_multitask_manifest(test, paths[1])
    return str(paths[0]), str(paths[1])


def build_model(cfg: Config, texts: list[str]) -> PrefixLanguageModel:
    """The model of a run: the encoder (trained), the mapper, the LM (frozen unless told).

    Args:
        cfg: the settings.
        texts: every prompt and answer (the tiny model's word vocabulary).

    Returns:
        The model; a classification head of the encoder is frozen (no loss reaches it; kept so
        that the file loads strictly as ``htsat_22``, and DDP sees no unused parameter).
    """
    from transformers import AutoModelForCausalLM, GPT2Config

    from clapkit.audio import cnn14_encoder, htsat_encoder
    from clapkit.caption import mlp_mapper, transformer_mapper
    from clapkit.core import create_audio_encoder

    if cfg.size == "tiny":
        encoder: Any = (
            cnn14_encoder(
                frontend=speech_frontend(cfg.clip_seconds), **SMALL_AUDIO["cnn14"]["small"]
            )
            if cfg.audio == "cnn14"
            else htsat_encoder(
                frontend=speech_frontend(cfg.clip_seconds), spec_size=80, embed_dim=32,
                depths=(1, 1), num_heads=(2, 4), window_size=5, num_classes=0,
                spec_augment=cfg.spec_augment, drop_path_rate=0.0,
            )
        )  # fmt: skip
        tokenizer: Any = build_word_tokenizer(texts)
        lm: Any = GPT2Config(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id, **SMALL_TEXT[cfg.language_model],
        )  # fmt: skip
        width = lm.n_embd
    else:
        encoder = create_audio_encoder(
            cfg.audio, weights=cfg.audio_weights, spec_augment=cfg.spec_augment
        )
        tokenizer = cfg.tokenizer or cfg.language_model
        lm = AutoModelForCausalLM.from_pretrained(cfg.language_model)
        width = int(lm.config.hidden_size)
    mapper: Any = (
        mlp_mapper(embed_dim=cfg.projection_dim, prefix_length=cfg.prefix_length, width=width)
        if cfg.mapper == "mlp"
        else transformer_mapper(
            embed_dim=cfg.projection_dim, prefix_length=cfg.prefix_length, width=width,
            depth=cfg.mapper_depth, num_heads=cfg.mapper_heads,
        )
    )  # fmt: skip
    model = PrefixLanguageModel.build(
        audio_encoder=encoder, mapper=mapper, language_model=lm, tokenizer=tokenizer,
        projection=cfg.projection, projection_dim=cfg.projection_dim,
        projection_dropout=cfg.projection_dropout, normalize_embedding=cfg.normalize_prefix,
        freeze_language_model=cfg.freeze_language_model,
    )  # fmt: skip
    head = getattr(model.audio_encoder, "head", None)
    if isinstance(head, torch.nn.Module):  # after build: set_frozen switches the encoder on
        head.requires_grad_(False)
    return model


class PretrainHtsat22Recipe:
    """One HTSAT-22 pretraining run: ``setup``, ``train`` (``evaluate`` and ``save_checkpoint``
    each epoch), ``cleanup``; ``setup`` resumes when ``--resume`` is given.

    Args:
        cfg: the resolved settings.
        preset: the preset's name (recorded in the report and the model card).
    """

    def __init__(self, cfg: Config, preset: str = "pengi-22") -> None:
        self.cfg, self.preset = cfg, preset
        self.out = Path(cfg.output_dir)
        self.progress, self.skipped = Progress(), SkippedFiles()

    def setup(self) -> None:
        """Accelerator, run folder, data, model, optimiser, schedule, loader; then the resume."""
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        torch.set_flush_denormal(True)  # near-silent padding makes denormals that slow CPU kernels
        self.accelerator = accelerator = make_accelerator(
            self.out, mixed_precision=cfg.mixed_precision, log_with=cfg.log_with,
            global_batch_size=cfg.global_batch_size, batch_size=cfg.batch_size,
        )  # fmt: skip
        setup_logging(accelerator)
        identity = {**dataclasses.asdict(cfg), "num_processes": accelerator.num_processes}
        plan = plan_run(
            self.out, identity, seed=cfg.seed, resume=cfg.resume, overwrite=cfg.overwrite,
            force=cfg.resume_force, ignore=NOT_IDENTITY,
        )  # fmt: skip
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            plan.apply()
        accelerator.wait_for_everyone()
        self.run_json = plan.run_json
        set_seed(cfg.seed)
        train_manifest, eval_manifest = cfg.train_manifest, cfg.eval_manifest
        if cfg.fsdd_root is not None and train_manifest is None:
            train_manifest, eval_manifest = fsdd_multitask_manifests(
                cfg.fsdd_root, self.out / "data", cfg.heldout_speaker, cfg.fsdd_clips_per_digit
            )
        if train_manifest is None:
            raise SystemExit("give --train-manifest (a multi-task manifest) or --fsdd-root")
        train = read_multitask_manifest(train_manifest)
        self.eval_records = [] if eval_manifest is None else read_multitask_manifest(eval_manifest)
        texts = [t for r in [*train, *self.eval_records] for t in (r.prompt, r.answer)]
        model = build_model(cfg, texts)
        if cfg.grad_checkpointing:
            logger.info("gradient checkpointing in %s", enable_grad_checkpointing(model))
        frontend = dataclasses.replace(model.audio_encoder.frontend, clip_seconds=cfg.clip_seconds)
        self.train_set = MultiTaskDataset(
            train, frontend, train=True, seed=cfg.seed, on_error=cfg.on_error,
            cache_audio=cfg.cache_audio,
        )  # fmt: skip
        self.sampler = WeightedTaskSampler(
            self.train_set.tasks(), parse_weights(cfg.task_weights),
            num_samples=cfg.samples_per_epoch, seed=cfg.seed,
        )  # fmt: skip
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
            collate_fn=MultiTaskCollator(), num_workers=cfg.num_workers,
            # its own generator: creating the epoch's iterator draws no number from the global
            # RNG, so dropout after a mid-epoch resume sees the numbers of an unbroken run
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        self.flops_per_sample = self._count_flops(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=cfg.lr)
        warmup = cfg.warmup_steps
        # stepped once per update by the recipe, checkpointed via register_for_checkpointing
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            model, optimizer, loader
        )
        self.lm: PrefixLanguageModel = accelerator.unwrap_model(self.model)
        accelerator.register_for_checkpointing(self.scheduler, self.progress, self.skipped)
        if plan.resume_from is not None:
            accelerator.load_state(str(plan.resume_from))
            p = self.progress
            logger.info(
                "resumed from %s: epoch %d, step %d, batch %d of the epoch", plan.resume_from,
                p.epoch, p.step, p.batches_in_epoch,
            )  # fmt: skip
        self.resolved = {
            **jsonable(cfg), "preset": self.preset, "train_manifest": train_manifest,
            "eval_manifest": eval_manifest, "tasks": sorted(set(self.train_set.tasks())),
            "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
            "num_processes": accelerator.num_processes,
        }  # fmt: skip
        if accelerator.is_main_process:
            (self.out / "config.json").write_text(json.dumps(self.resolved, indent=2))
        if cfg.log_with != "none":
            config = {k: str(v) for k, v in jsonable(cfg).items()}
            accelerator.init_trackers("pretrain_htsat22", config=config)

    def _count_flops(self, model: PrefixLanguageModel) -> float:
        """Forward + backward FLOPs per pair on a stand-in batch of two (before ``prepare``)."""
        samples = int(model.sample_rate * self.cfg.clip_seconds)
        waveform = torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
        batch = model.tokenize_prompted(["prompt"] * 2, ["answer"] * 2)
        return count_flops(lambda: model(waveform, **batch).loss.backward(), model) / 2

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
        meter = ThroughputMeter(self.flops_per_sample)
        while progress.epoch < cfg.epochs:
            epoch, started = progress.epoch, time.perf_counter()
            self.train_set.set_epoch(epoch)
            # the epoch's task draws (the same in every process); accelerate's loader sets its
            # sampler's epoch from its own counter at each iteration, so that counter is set too
            self.train_loader.set_epoch(epoch)
            loader = self.train_loader
            if progress.batches_in_epoch:  # resumed mid-epoch: the rest of the same order
                loader = accelerator.skip_first_batches(loader, progress.batches_in_epoch)
                loader.set_epoch(epoch)  # a new loader, its counter at 0
            self.model.train()
            meter.reset()
            meter.start()
            samples = 0
            for batch in loader:
                meter.batch_arrived()
                progress.batches_in_epoch += 1
                self.skipped.update(batch["skipped"])
                if not batch["answers"]:
                    meter.micro_step_done()
                    continue
                samples += len(batch["answers"]) * accelerator.num_processes
                with accelerator.accumulate(self.model), accelerator.autocast():
                    ids = self.lm.tokenize_prompted(
                        batch["prompts"], batch["answers"], max_answer_tokens=cfg.max_answer_tokens
                    )
                    loss = self.model(batch["waveform"], **ids).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(self.lm.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                progress.loss_sum += loss.item()  # in Progress: a resumed epoch averages all
                progress.loss_count += 1
                if not accelerator.sync_gradients:
                    meter.micro_step_done()
                    continue
                self.scheduler.step()
                progress.step += 1
                speed, samples = meter.step_done(samples), 0
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                accelerator.log(
                    {"train/loss": loss.item(), "train/lr": self.scheduler.get_last_lr()[0],
                     "train/skipped_files": self.skipped.count,
                     **{f"train/{k}": v for k, v in speed.as_dict().items()}},
                    step=progress.step,
                )  # fmt: skip
                if progress.step % cfg.save_every_steps == 0:
                    self.save_checkpoint(f"step_{progress.step:08d}")
                    meter.start()  # the save is neither data wait nor compute
            self.end_epoch(epoch, started, meter.summary().as_dict())
        bar.close()
        return {"epochs": progress.history, "best": progress.best}

    def end_epoch(self, epoch: int, started: float, speed: dict[str, float]) -> None:
        """The epoch's record (train loss, answer accuracy), ``best/``, its end checkpoint."""
        cfg, accelerator, progress = self.cfg, self.accelerator, self.progress
        mean = torch.tensor(
            progress.loss_sum / max(progress.loss_count, 1), device=accelerator.device
        )
        train_loss = float(accelerator.reduce(mean, "mean"))
        record: dict[str, Any] = {"epoch": epoch, "step": progress.step, "train_loss": train_loss,
                                  "lr": self.scheduler.get_last_lr()[0],
                                  "skipped_files": self.skipped.count, **speed}  # fmt: skip
        if self.eval_records and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(self.evaluate())
        score = record.get("answer_score", -train_loss)
        record["seconds"] = time.perf_counter() - started
        best = progress.best
        # ties (a small eval set) go to the lower training loss
        if best is None or (score, -train_loss) > (best["score"], -best["train_loss"]):
            progress.best = {**record, "score": score}
            self.save_best()
        progress.history.append(record)
        accelerator.log({f"epoch/{k}": v for k, v in flatten(record).items()}, step=progress.step)
        logger.info("epoch %d: %s", epoch, json.dumps(flatten(record)))
        progress.epoch, progress.batches_in_epoch = epoch + 1, 0
        progress.loss_sum, progress.loss_count = 0.0, 0
        self.save_checkpoint(f"step_{progress.step:08d}_end")
        if accelerator.is_main_process:
            write_report(
                self.out, title="pretrain_htsat22 report", summary=self.summary(),
                history=progress.history, best=progress.best, skipped=self.skipped,
                extra={"flops_per_sample": self.flops_per_sample},
            )  # fmt: skip

    def evaluate(self) -> dict[str, Any]:
        """Answer the eval pairs (greedy, whole clips; each process its share).

        Returns:
            ``{task: {"accuracy", "score"}}`` (exact match after lower-casing and stripping)
            and ``answer_score``, their mean.
        """
        records: list[MultiTaskRecord] = self.eval_records
        with self.accelerator.split_between_processes(list(range(len(records)))) as share:
            answers = self.lm.generate_answers(
                [records[i].audio for i in share], [records[i].prompt for i in share],
                max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size,
            ) if share else []  # fmt: skip
            part = list(zip(share, answers, strict=True))
        pairs = dict(gather_object(part)) if self.accelerator.num_processes > 1 else dict(part)
        right: dict[str, list[bool]] = {}
        for i, record in enumerate(records):
            hit = pairs[i].strip().lower() == record.answer.strip().lower()
            right.setdefault(record.task, []).append(hit)
        scores = {task: sum(hits) / len(hits) for task, hits in sorted(right.items())}
        result: dict[str, Any] = {t: {"accuracy": s, "score": s} for t, s in scores.items()}
        result["answer_score"] = sum(scores.values()) / len(scores)
        return result

    def save_best(self) -> None:
        """``best/``: the encoder as clapkit safetensors, the whole model, a card (atomic)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        staged = self.out / ".best.partial"
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir(parents=True)
        save_weights(self.lm.audio_encoder, staged / "audio_encoder.safetensors")
        self.lm.save_pretrained(staged / "prefix_lm")
        best = self.progress.best or {}
        card = [
            f"# HTSAT-22 audio encoder trained by `{RECIPE}` (preset `{self.preset}`)", "",
            f"Epoch {best.get('epoch')}, step {best.get('step')}, score {best.get('score'):.4g}.",
            "", "```python", "from clapkit.audio import htsat_22",
            "encoder = htsat_22(weights='audio_encoder.safetensors')  # size full",
            "from clapkit.caption import PrefixLanguageModel",
            "model = PrefixLanguageModel.from_pretrained('prefix_lm')", "```", "",
            "For CLAP pretraining: `accelerate launch recipes/pretrain_clap.py --preset "
            "table1-htsat22-gpt2 --audio-weights best/audio_encoder.safetensors ...`",
        ]  # fmt: skip
        (staged / "README.md").write_text("\n".join(card) + "\n")
        replace_folder(staged, self.out / "best")

    def save_checkpoint(self, name: str) -> None:
        """Atomic ``accelerator.save_state`` (model, optimiser, RNG, scheduler, progress,
        skipped files) as ``checkpoints/NAME``, with ``run.json`` and ``config.json``."""
        files = {"run.json": self.run_json, "config.json": json.dumps(self.resolved, indent=2)}
        folder = save_checkpoint(self.accelerator, self.out / "checkpoints" / name, files=files)
        logger.info("checkpoint saved: %s", folder.name)

    def summary(self) -> list[str]:
        """The report's lines under its heading."""
        cfg = self.cfg
        tasks = ", ".join(f"`{t}`" for t in self.resolved["tasks"])
        return [
            f"Preset `{self.preset}`, audio `{cfg.audio}` (size {cfg.size}), LM "
            f"`{cfg.language_model if cfg.size == 'full' else 'tiny GPT2'}` "
            f"(frozen: {cfg.freeze_language_model}), seed {cfg.seed}; tasks {tasks}.",
            f"FLOPs per pair (forward + backward): {self.flops_per_sample:.3e}",
            f"Command: `accelerate launch {RECIPE} {' '.join(sys.argv[1:])}`",
        ]

    def cleanup(self) -> None:
        """End the trackers and the process group."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def main(argv: list[str]) -> dict[str, Any]:
    """Parse the command line, train, clean up; returns metrics.json's epochs and best."""
    preset, cfg = parse_config(Config, PRESETS, argv, default="pengi-22", description=__doc__,
                               notes=NOTES)  # fmt: skip
    recipe = PretrainHtsat22Recipe(cfg, preset)
    recipe.setup()
    result = recipe.train()
    recipe.cleanup()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
