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
Pengi's, the optimiser is the paper's Adam with Pengi's settings where known and ours where not
(settings, presets and task families: ``clapkit.train.presets.htsat22``; the model:
``build_prefix_model`` below; the smoke data: ``clapkit.train.demo.fsdd_multitask_manifests``).

The training data is a multi-task manifest (``clapkit.data.multitask``: one ``{"audio", "task",
"prompt", "answer"}`` line per pair; build it from the datasets' training splits with
``classification_records`` / ``caption_records`` / ``qa_records`` / ``task_records``), drawn per
epoch with ``--task-weights NAME=W ...`` (default: a share proportional to each task's size). The
eval manifest (same format) is answered by greedy decoding each epoch: exact-match accuracy per
task; the epoch with the best mean accuracy is kept (without one, the lowest training loss).

Outputs: ``run.json``, ``config.json``, ``metrics.json``, ``report.md``, ``history.csv``,
``curves.png``, ``best/`` (``audio_encoder.safetensors``, ``prefix_lm/`` = the whole model as
``PrefixLanguageModel.save_pretrained``, ``README.md``), ``checkpoints/`` (atomic
checkpoints (JSON + safetensors) every ``--save-every-steps`` updates and at each epoch end;
``--resume latest`` continues exactly, mid-epoch included), TensorBoard logs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import (  # type: ignore[import-untyped]
    broadcast_object_list,
)
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from clapkit.audio import save_weights
from clapkit.caption import PrefixLanguageModel, mlp_mapper, transformer_mapper
from clapkit.core import create_audio_tower
from clapkit.data import (
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskRecord,
    WeightedTaskSampler,
    read_multitask_manifest,
)
from clapkit.train.checkpointing import written_aside
from clapkit.train.demo import fsdd_multitask_manifests
from clapkit.train.loaders import batch_buffers, loader_options
from clapkit.train.presets.htsat22 import (
    NOTES,
    RESUMABLE_CHANGES,
    Config,
    htsat22_presets,
    parse_weights,
)
from clapkit.train.recipe import TrainingRecipe
from clapkit.train.reporting import write_report
from clapkit.train.setup import enable_grad_checkpointing, linear_warmup
from clapkit.train.shares import map_shares
from clapkit.train.small import (
    build_word_tokenizer,
    small_audio_encoder,
    small_gpt2_config,
    speech_frontend,
)
from clapkit.train.steps import update_groups
from clapkit.train.throughput import ThroughputMeter, count_flops

PRESETS = htsat22_presets(fsdd_root=str(Path(__file__).parents[1] / "data" / "fsdd"))


def build_prefix_model(cfg: Config, texts: list[str]) -> PrefixLanguageModel:
    """The run's model: the audio encoder (trained), the mapper, the LM (frozen unless told).

    Args:
        cfg: the run's settings.
        texts: every prompt and answer (the tiny model's word vocabulary).

    Returns:
        The model; the encoder has no classification head (no loss reaches one, and DDP
        refuses parameters without gradients).
    """
    if cfg.demo.size == "tiny":
        # FSDD's words last ~0.4 s: zero-padded to the clip, half of it would sit at the -100 dB
        # floor, and the tiny HTSAT learns no digit from such clips; repeated, it does. A 20 ms
        # hop makes 0.8 s one 40 x 40 HTSAT image (40 mels), a third of the cost of 80 x 80.
        frontend = speech_frontend(cfg.clip_seconds, hop_length=160, fill="repeat")
        encoder: Any = (
            small_audio_encoder("cnn14", "small", frontend)
            if cfg.audio == "cnn14"
            else small_audio_encoder("htsat", "tiny", frontend, spec_augment=cfg.spec_augment)
        )
        tokenizer: Any = build_word_tokenizer(texts)
        lm: Any = small_gpt2_config(
            cfg.language_model, tokenizer, initializer_range=cfg.lm_init_std
        )
        width = lm.n_embd
    else:
        encoder = create_audio_tower(
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
    return PrefixLanguageModel.build(
        audio_encoder=encoder, mapper=mapper, language_model=lm, tokenizer=tokenizer,
        projection=cfg.projection, projection_dim=cfg.projection_dim,
        projection_dropout=cfg.projection_dropout, normalize_embedding=cfg.normalize_prefix,
        freeze_language_model=cfg.freeze_language_model,
    )  # fmt: skip


class PretrainHtsat22Recipe(TrainingRecipe[Config]):
    """One HTSAT-22 pretraining run: ``setup``, ``train`` (``evaluate`` and ``save_checkpoint``
    each epoch), ``cleanup`` (``clapkit.train.recipe.TrainingRecipe``); ``setup`` resumes when
    ``--resume`` is given.

    Args:
        cfg: the resolved settings.
        preset: the preset's name (recorded in the report and the model card).
    """

    resumable_changes, flush_denormal = RESUMABLE_CHANGES, True
    hub_pipeline_tag = "feature-extraction"
    config_class, presets, default_preset, notes = Config, PRESETS, "pengi-22", NOTES

    def setup(self) -> None:
        """Accelerator, run folder, data, model, optimiser, schedule, loader; then the resume."""
        cfg = self.cfg
        accelerator = self.accelerator
        train_manifest, eval_manifest = cfg.train_manifest, cfg.eval_manifest
        if cfg.demo.fsdd_root is not None and train_manifest is None:
            # written by one process: another reading while a second rewrites finds no record
            paths: list[str | None] = [None, None]
            if accelerator.is_main_process:
                paths[:] = fsdd_multitask_manifests(
                    cfg.demo.fsdd_root, self.out / "data", cfg.demo.heldout_speaker,
                    cfg.demo.clips_per_digit,
                )  # fmt: skip
            train_manifest, eval_manifest = broadcast_object_list(paths)
        if train_manifest is None:
            raise SystemExit("give --train-manifest (a multi-task manifest) or --demo.fsdd-root")
        train = read_multitask_manifest(train_manifest)
        self.eval_records = [] if eval_manifest is None else read_multitask_manifest(eval_manifest)
        texts = [t for r in [*train, *self.eval_records] for t in (r.prompt, r.answer)]
        model = build_prefix_model(cfg, texts)
        if cfg.grad_checkpointing:
            self.log.info("gradient checkpointing in %s", enable_grad_checkpointing(model))
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
            collate_fn=MultiTaskCollator(buffers=batch_buffers(cfg.num_workers)),
            **loader_options(cfg.num_workers),
            # its own generator: creating the epoch's iterator draws no number from the global
            # RNG, so dropout after a mid-epoch resume sees the numbers of an unbroken run
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip
        self.flops_per_sample = self._count_flops(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=cfg.lr, **self.optimizer_options())
        # stepped once per update by the recipe, checkpointed via register_for_checkpointing
        self.scheduler = linear_warmup(optimizer, cfg.warmup_steps)
        self.model, self.optimizer, self.train_loader = accelerator.prepare(
            model, optimizer, loader
        )
        self.lm: PrefixLanguageModel = accelerator.unwrap_model(self.model)
        self.resume(self.scheduler)
        self.write_config(train_manifest=train_manifest, eval_manifest=eval_manifest,
                          tasks=sorted(set(self.train_set.tasks())))  # fmt: skip

    def _count_flops(self, model: PrefixLanguageModel) -> float:
        """Forward + backward FLOPs per pair on a stand-in batch of two (before ``prepare``)."""
        samples = int(model.sample_rate * self.cfg.clip_seconds)
        waveform = torch.randn(2, samples, generator=torch.Generator().manual_seed(0))
        batch = model.tokenize_prompted(["prompt"] * 2, ["answer"] * 2)
        return count_flops(lambda: model(waveform, **batch).loss.backward(), model) / 2

    def train(self) -> dict[str, Any]:
        """Every remaining epoch: updates, a checkpoint every ``save_every_steps``, then the
        epoch's evaluation and end checkpoint. Returns ``{"epochs": ..., "best": ...}``."""
        cfg, progress = self.cfg, self.progress
        bar = self.progress_bar(cfg.epochs)
        meter = self.throughput_meter(self.flops_per_sample)
        while progress.epoch < cfg.epochs:
            epoch, started = progress.epoch, time.perf_counter()
            self.model.train()
            meter.reset()
            meter.start()
            # the epoch's task draws are the same in every process (WeightedTaskSampler)
            batches = self.epoch_batches(self.train_set, self.train_loader, needs="answers")
            for group in update_groups(meter.timed(batches), self.micro_steps):
                loss = self.update(group, self.loss_step)
                self.scheduler.step()
                meter.step_done(sum(len(batch["answers"]) for batch in group))
                if self.step_done(bar, loss, lambda: self._figures(meter), epoch=epoch):
                    meter.start()  # the save is neither data wait nor compute
            self.end_epoch(epoch, started, meter.summary().as_dict())
        bar.close()
        return {"epochs": progress.history, "best": progress.best}

    def _figures(self, meter: ThroughputMeter) -> dict[str, float]:
        """What a log step records beside the loss (read there only)."""
        return {"lr": float(self.scheduler.get_last_lr()[0]),
                "skipped_files": self.skipped.in_epoch(self.progress.epoch),
                **meter.take_window().as_dict()}  # fmt: skip

    def loss_step(self, batch: dict[str, Any]) -> Any:
        """Cross-entropy of a batch's answer tokens, after its audio prefix and task prompts."""
        ids = self.lm.tokenize_prompted(
            batch["prompts"], batch["answers"], max_answer_tokens=self.cfg.max_answer_tokens
        )
        return self.model(batch["waveform"], **ids).loss

    def end_epoch(self, epoch: int, started: float, speed: dict[str, float]) -> None:
        """The epoch's record (train loss, answer accuracy), ``best/``, its end checkpoint."""
        cfg, progress = self.cfg, self.progress
        record = self.epoch_record(lr=float(self.scheduler.get_last_lr()[0]), **speed)
        if self.eval_records and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(self.evaluate())
        train_loss = record["train_loss"]
        score = record.get("answer_score", -train_loss)
        record["seconds"] = time.perf_counter() - started
        best = progress.best
        # ties (a small eval set) go to the lower training loss
        if best is None or (score, -train_loss) > (best["score"], -best["train_loss"]):
            progress.best = {**record, "score": score}
            self.save_best()
        self.close_epoch(record)
        if self.accelerator.is_main_process:
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

        def answer(share: list[int]) -> list[str]:
            return self.lm.generate_answers(
                [records[i].audio for i in share], [records[i].prompt for i in share],
                max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size,
            )  # fmt: skip

        answers = [
            a for part in map_shares(self.accelerator, range(len(records)), answer) for a in part
        ]
        right: dict[str, list[bool]] = {}
        for i, record in enumerate(records):
            hit = answers[i].strip().lower() == record.answer.strip().lower()
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
        best = self.progress.best or {}
        card = [
            f"# HTSAT-22 audio encoder trained by `{self.script}` (preset `{self.preset}`)", "",
            f"Epoch {best.get('epoch')}, step {best.get('step')}, score {best.get('score'):.4g}.",
            "", "```python", "from clapkit.audio import htsat_22",
            "encoder = htsat_22(weights='audio_encoder.safetensors')  # size full",
            "from clapkit.caption import PrefixLanguageModel",
            "model = PrefixLanguageModel.from_pretrained('prefix_lm')", "```", "",
            "For CLAP pretraining: `accelerate launch recipes/pretrain_clap.py --preset "
            "table1-htsat22-gpt2 --audio-weights best/audio_encoder.safetensors ...`",
        ]  # fmt: skip
        with written_aside(self.out / "best") as staged:
            staged.mkdir()
            save_weights(self.lm.audio_encoder, staged / "audio_encoder.safetensors")
            self.lm.save_pretrained(staged / "prefix_lm")
            (staged / "README.md").write_text("\n".join(card) + "\n")

    def summary(self) -> list[str]:
        """The report's lines under its heading."""
        cfg = self.cfg
        tasks = ", ".join(f"`{t}`" for t in self.resolved["tasks"])
        return [
            f"Preset `{self.preset}`, audio `{cfg.audio}` (size {cfg.demo.size}), LM "
            f"`{cfg.language_model if cfg.demo.size == 'full' else 'tiny GPT2'}` "
            f"(frozen: {cfg.freeze_language_model}), seed {cfg.seed}; tasks {tasks}.",
            f"FLOPs per pair (forward + backward): {self.flops_per_sample:.3e}",
            f"Command: `{self.command()}`",
        ]


main = PretrainHtsat22Recipe.main
"""Parse the command line, run the recipe's life cycle, return what its ``train`` returns."""

if __name__ == "__main__":
    main()
