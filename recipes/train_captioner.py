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
picks the starting values. Outputs: ``config.json``, ``metrics.json`` (per epoch: train loss
and caption metrics), ``examples.jsonl`` (test captions of the best epoch), ``best/``
(``ClapCaptioner.save_pretrained``), ``checkpoints/`` (``accelerator.save_state``; resume with
``--resume latest``), TensorBoard logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import tyro
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_support import build_word_tokenizer, fsdd_manifests, latest_checkpoint

from clapkit.caption import CaptionerConfig, ClapCaptioner, evaluate_captions, transformer_mapper
from clapkit.data import ClapCollator, ManifestDataset, read_manifest

logger = logging.getLogger("train_captioner")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    """Every setting of a run; defaults are the paper's captioner on AudioCaps."""

    # Model
    clap: str | None = None
    """ClapModel folder or msclap CLAP_weights_2023.pth whose audio side is used (frozen)."""
    size: Literal["full", "tiny"] = "full"
    """tiny = smoke model: 8 kHz CNN audio encoder, 1-layer GPT2, word-level tokenizer."""
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
    fsdd_root: str | None = None
    """Smoke data: manifests built from this Free Spoken Digit Dataset folder."""
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
    resume: str | None = None
    """'latest' or a checkpoint folder written by this recipe."""
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    torch_threads: int | None = None


AUDIOCAPS = Config()
PRESETS: dict[str, Config] = {
    "audiocaps": AUDIOCAPS,
    "clotho": dataclasses.replace(AUDIOCAPS, output_dir="runs/captioner-clotho"),
    "smoke": dataclasses.replace(
        AUDIOCAPS,
        size="tiny",
        fsdd_root=str(REPO / "data" / "fsdd"),
        fsdd_clips_per_digit=2,
        references_per_item=None,
        prefix_length=4,
        mapper_depth=1,
        mapper_heads=2,
        freeze_language_model=False,  # a random tiny LM knows no language: train it too
        epochs=3,
        lr=1e-2,
        warmup_steps=0,
        batch_size=8,
        global_batch_size=16,
        num_workers=0,
        beam_size=2,
        max_new_tokens=10,
        examples=4,
        mixed_precision="no",
        output_dir="runs/captioner-smoke",
        log_with="tensorboard",
        torch_threads=1,
    ),
}


def parse_config(argv: list[str]) -> Config:
    """``--preset NAME`` picks the defaults; every other flag overrides a `Config` field."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="audiocaps")
    known, rest = parser.parse_known_args(argv)
    description = f"{__doc__}\nPresets: {', '.join(sorted(PRESETS))} (--preset NAME)."
    return tyro.cli(Config, default=PRESETS[known.preset], args=rest, description=description)


def build_captioner(cfg: Config, captions: list[str]) -> ClapCaptioner:
    """The captioner: a trained CLAP's audio side (full) or a tiny random model (smoke)."""
    if cfg.size == "tiny":
        from transformers import GPT2Config

        from clapkit.audio import FrontendConfig, cnn14_encoder

        frontend = FrontendConfig(
            sample_rate=8000,
            n_fft=256,
            win_length=256,
            hop_length=80,
            n_mels=32,
            fmin=20.0,
            fmax=4000.0,
            clip_seconds=0.8,
            fill="pad",
        )
        encoder = cnn14_encoder(
            frontend=frontend, channels=(4, 8), out_dim=16, num_classes=0, spec_augment=False
        )
        tokenizer = build_word_tokenizer(captions)
        lm_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=64,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        mapper = transformer_mapper(
            embed_dim=16,
            prefix_length=cfg.prefix_length,
            width=16,
            depth=cfg.mapper_depth,
            num_heads=cfg.mapper_heads,
        )
        config = CaptionerConfig(
            audio=encoder.get_config(),
            mapper=mapper.get_config(),
            language_model=lm_config.to_dict(),
            projection="linear",
            projection_dim=16,
            freeze_language_model=cfg.freeze_language_model,
        )
        return ClapCaptioner(config, tokenizer=tokenizer, audio_encoder=encoder, mapper=mapper)
    if cfg.clap is None:
        raise SystemExit("--clap is required: a ClapModel folder or msclap CLAP_weights_2023.pth")
    from transformers import AutoModelForCausalLM

    from clapkit.core import ClapModel

    tokenizer = cfg.tokenizer or cfg.language_model
    if Path(cfg.clap).is_dir():
        clap = ClapModel.from_pretrained(cfg.clap)
    else:
        clap = ClapModel.from_msclap(cfg.clap, version="2023", tokenizer=tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(cfg.language_model)
    mapper = transformer_mapper(
        embed_dim=clap.config.projection_dim,
        prefix_length=cfg.prefix_length,
        width=lm.get_input_embeddings().weight.shape[1],
        depth=cfg.mapper_depth,
        num_heads=cfg.mapper_heads,
    )
    return ClapCaptioner.from_clap(
        clap,
        tokenizer=tokenizer,
        language_model=lm,
        mapper=mapper,
        freeze_language_model=cfg.freeze_language_model,
    )


def caption_test_set(
    accelerator: Accelerator, captioner: ClapCaptioner, loader: DataLoader, cfg: Config
) -> tuple[list[str], list[str]]:
    """Captions of every test clip (each process decodes its share), with the clips' keys."""
    keys, predictions = [], []
    for batch in loader:
        captions = captioner.generate(
            batch["waveform"].to(accelerator.device),
            beam_size=cfg.beam_size,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=len(batch["keys"]),
        )
        keys += batch["keys"]
        predictions += captions
    gathered: list[list[tuple[str, str]]] = [[] for _ in range(accelerator.num_processes)]
    if accelerator.num_processes > 1:
        torch.distributed.all_gather_object(gathered, list(zip(keys, predictions, strict=True)))
    else:
        gathered = [list(zip(keys, predictions, strict=True))]
    unique = dict(pair for part in gathered for pair in part)  # drops the sampler's padding
    return list(unique), list(unique.values())


def main(cfg: Config) -> dict[str, Any]:
    """Train the mapper, caption the test set, write the outputs; returns metrics.json."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.log_with == "none" else cfg.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    per_update = cfg.batch_size * accelerator.num_processes
    if cfg.global_batch_size % per_update:
        raise SystemExit(
            f"global_batch_size {cfg.global_batch_size} is not a multiple of {per_update}"
        )
    accelerator.gradient_accumulation_steps = cfg.global_batch_size // per_update
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.ERROR)
    set_seed(cfg.seed)
    train_manifest, test_manifest = cfg.train_manifest, cfg.test_manifest
    if cfg.fsdd_root is not None:
        train_manifest, test_manifest = fsdd_manifests(
            cfg.fsdd_root, out / "data", "theo", cfg.fsdd_clips_per_digit
        )
    if train_manifest is None or test_manifest is None:
        raise SystemExit("give --train-manifest and --test-manifest")
    train_records, test_records = read_manifest(train_manifest), read_manifest(test_manifest)
    references = {r.key: list(r.captions) for r in test_records}
    all_captions = [c for r in [*train_records, *test_records] for c in r.captions]
    captioner = build_captioner(cfg, all_captions)
    frontend = captioner.audio_encoder.frontend
    train_set = ManifestDataset(train_records, frontend, train=True, seed=cfg.seed)
    test_set = ManifestDataset(test_records, frontend, train=False, require_captions=True)
    collate = ClapCollator()
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    test_loader = DataLoader(
        test_set, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.num_workers
    )
    optimizer = torch.optim.AdamW([p for p in captioner.parameters() if p.requires_grad], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.gradient_accumulation_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    model, optimizer, train_loader, test_loader, scheduler = accelerator.prepare(
        captioner, optimizer, train_loader, test_loader, scheduler
    )
    start_epoch = 0
    if cfg.resume is not None:
        checkpoint = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume)
        accelerator.load_state(str(checkpoint))
        start_epoch = json.loads((checkpoint / "progress.json").read_text())["epoch"] + 1
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        resolved = {
            **dataclasses.asdict(cfg),
            "gradient_accumulation_steps": accelerator.gradient_accumulation_steps,
        }
        (out / "config.json").write_text(json.dumps(resolved, indent=2))
        accelerator.init_trackers(
            "train_captioner", config={k: str(v) for k, v in resolved.items()}
        )
    history_path = out / "metrics.json"
    history: list[dict[str, Any]] = (
        json.loads(history_path.read_text())["epochs"]
        if start_epoch and history_path.is_file()
        else []
    )
    best = max(history, key=lambda r: r.get("score", -1.0), default=None)
    unwrapped: ClapCaptioner = accelerator.unwrap_model(model)
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        losses = []
        bar = tqdm(
            train_loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process
        )
        for batch in bar:
            if not batch["captions"]:
                continue
            with accelerator.accumulate(model), accelerator.autocast():
                loss = model(batch["waveform"], captions=batch["captions"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(unwrapped.mapper.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_loss = float(accelerator.reduce(torch.stack(losses).mean(), "mean"))
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
        }
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            keys, predictions = caption_test_set(accelerator, unwrapped, test_loader, cfg)
            scores = evaluate_captions(
                predictions,
                [references[k] for k in keys],
                references_per_item=cfg.references_per_item,
            )
            record.update(scores.corpus)
            record["missing_metrics"] = scores.missing
            record["score"] = scores.corpus.get("spider", scores.corpus["cider_d"])
            if accelerator.is_main_process and (best is None or record["score"] > best["score"]):
                best = record
                unwrapped.save_pretrained(out / "best")
                examples = [
                    {"key": k, "prediction": p, "references": references[k]}
                    for k, p in list(zip(keys, predictions, strict=True))[: cfg.examples]
                ]
                (out / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=epoch)
        checkpoint = out / "checkpoints" / f"step_{(epoch + 1) * steps_per_epoch:08d}_end"
        accelerator.save_state(str(checkpoint))
        if accelerator.is_main_process:
            (checkpoint / "progress.json").write_text(json.dumps({"epoch": epoch}))
            history_path.write_text(json.dumps({"epochs": history, "best": best}, indent=2))
            logger.info(
                "epoch %d: %s", epoch, {k: v for k, v in record.items() if k != "missing_metrics"}
            )
    accelerator.end_training()
    return {"epochs": history, "best": best}


if __name__ == "__main__":
    main(parse_config(sys.argv[1:]))
