"""Classification fine-tuning of an audio encoder: the classifier and its folder.

An :class:`AudioClassifier` is an audio encoder (any ``clapkit.audio`` encoder) with a linear head
on its embedding. In ``linear-probe`` mode the encoder is frozen, BatchNorm statistics included
(it stays in eval mode); in ``full`` mode everything trains. It saves as a folder
(``config.json`` + ``model.safetensors``) and loads back strictly::

    encoder = build_encoder("htsat-22", weights="htsat22.safetensors")   # or clap="runs/x/best"
    model = AudioClassifier(encoder, class_names=names, mode="full")
    model.save_pretrained("best"); AudioClassifier.from_pretrained("best")

The data and its folds are :mod:`clapkit.train.folds`'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clapkit.train.shares import map_shares

__all__ = ["CLASSIFIER_FORMAT", "AudioClassifier", "Mode", "build_encoder", "classifier_logits"]

Mode = Literal["linear-probe", "full"]
MODES: tuple[Mode, ...] = ("linear-probe", "full")
CLASSIFIER_FORMAT = "clapkit-audio-classifier"
"""The ``format`` entry of a classifier folder's ``config.json``."""


class AudioClassifier(nn.Module):
    """An audio encoder with a linear classification head on its embedding.

    Args:
        encoder: a ``clapkit.audio.AudioEncoder`` (its own classifier head is removed).
        class_names: the classes, in output order.
        mode: ``"linear-probe"`` (frozen encoder kept in eval mode, only the head trains) or
            ``"full"`` (everything trains).
        multilabel: scores are read with a sigmoid per class (BCE) instead of a softmax.
        dropout: dropout on the embedding before the head.

    Raises:
        ValueError: an unknown mode, fewer than two classes, a negative dropout.
    """

    encoder: Any  # the clapkit.audio.AudioEncoder interface (duck-typed)

    def __init__(
        self,
        encoder: nn.Module,
        *,
        class_names: Sequence[str],
        mode: Mode = "full",
        multilabel: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if len(class_names) < 2:
            raise ValueError(f"a classifier needs >= 2 classes, got {list(class_names)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if getattr(encoder, "num_classes", 0):
            encoder.reset_classifier(0)  # type: ignore[operator]
        self.encoder = encoder
        self.class_names = tuple(class_names)
        self.mode: Mode = mode
        self.multilabel = multilabel
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(encoder.out_dim), len(self.class_names))  # type: ignore[arg-type]
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if mode == "linear-probe":
            self.encoder.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> AudioClassifier:
        """Training or eval mode; a linear probe's encoder always stays in eval mode."""
        super().train(mode)
        if self.mode == "linear-probe":
            self.encoder.eval()
        return self

    def embed(self, waveform: Tensor) -> Tensor:
        """The encoder's clip embeddings (no gradient into a frozen encoder).

        Args:
            waveform: clips at the encoder's rate. Shape ``[b, t]``.

        Returns:
            ``[b, d]``.
        """
        if self.mode == "linear-probe":
            with torch.no_grad():
                return self.encoder(waveform).embedding
        return self.encoder(waveform).embedding

    def forward(self, waveform: Tensor) -> Tensor:
        """Class logits.

        Args:
            waveform: clips at ``encoder.frontend.sample_rate``. Shape ``[b, t]``.

        Returns:
            Logits (softmax or sigmoid per ``multilabel``). Shape ``[b, c]``.
        """
        return self.head(self.dropout(self.embed(waveform)))

    def parameter_groups(self, lr: float, encoder_lr_ratio: float) -> list[dict[str, Any]]:
        """Optimiser groups: the head at ``lr``, a trained encoder at ``lr * encoder_lr_ratio``.

        Args:
            lr: the head's learning rate.
            encoder_lr_ratio: the encoder's rate as a fraction of the head's (full mode).

        Returns:
            One group (linear probe) or two, each with its base rate under ``"base_lr"``.
        """
        head = [*self.head.parameters()]
        groups = [{"params": head, "lr": lr, "base_lr": lr, "name": "head"}]
        if self.mode == "full":
            rate = lr * encoder_lr_ratio
            groups.append(
                {"params": [*self.encoder.parameters()], "lr": rate, "base_lr": rate,
                 "name": "encoder"}
            )  # fmt: skip
        return groups

    def get_config(self) -> dict[str, Any]:
        """``config.json``: the encoder's config, classes, mode, head settings."""
        return {
            "format": CLASSIFIER_FORMAT,
            "encoder": self.encoder.get_config(),
            "class_names": list(self.class_names),
            "mode": self.mode,
            "multilabel": self.multilabel,
            "dropout": self.dropout.p,
        }

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (every weight) into ``folder``.

        Args:
            folder: created if absent.

        Returns:
            The folder.
        """
        from safetensors.torch import save_model

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.get_config(), indent=2))
        save_model(self, str(path / "model.safetensors"))
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> AudioClassifier:
        """Rebuild a classifier written by :meth:`save_pretrained`, loading every weight strictly.

        Args:
            folder: the classifier folder.

        Returns:
            The classifier in eval mode.

        Raises:
            FileNotFoundError: no folder, ``config.json`` or ``model.safetensors``.
            ValueError: a ``config.json`` that is not a classifier's (the file named).
            clapkit.audio.CheckpointError: missing, unexpected or mis-shaped weights, by name.
        """
        from clapkit.audio import build_audio_encoder
        from clapkit.core import load_pretrained_weights, read_pretrained

        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a classifier folder (no such folder)")
        files = read_pretrained(path, what="clapkit audio classifier")
        config = files.config
        if config.get("format") != CLASSIFIER_FORMAT or "encoder" not in config:
            raise ValueError(
                f"{files.folder / 'config.json'} is not an audio classifier's config (format "
                f"{config.get('format')!r}, expected {CLASSIFIER_FORMAT!r} with an 'encoder')"
            )
        model = cls(
            build_audio_encoder(dict(config["encoder"])),
            class_names=config["class_names"],
            mode=config.get("mode", "full"),
            multilabel=bool(config.get("multilabel", False)),
            dropout=float(config.get("dropout", 0.0)),
        )
        load_pretrained_weights(model, files)
        return model.eval()


def build_encoder(
    name: str,
    *,
    weights: str | None = None,
    clap: str | None = None,
    **overrides: Any,
) -> Any:
    """The audio encoder a fine-tuning run starts from, without a classifier head.

    Args:
        name: a registered audio encoder (``cnn14``, ``htsat``, ``htsat-22``, ...), used when
            ``clap`` is not given.
        weights: a weights file its builder loads strictly (PANNs ``Cnn14_mAP=0.431.pth``,
            HTS-AT ``.ckpt``, a clapkit safetensors file); None = random init.
        clap: a ``ClapModel.save_pretrained`` folder (or hub id) whose audio tower is taken.
        **overrides: keyword overrides of the encoder's builder (``frontend=``, sizes).

    Returns:
        The encoder, in training mode, ``num_classes == 0``.

    Raises:
        ValueError: both ``weights`` and ``clap``.
    """
    if weights is not None and clap is not None:
        raise ValueError("give either weights (an encoder file) or clap (a ClapModel folder)")
    if clap is not None:
        from clapkit.core import ClapModel

        encoder: Any = ClapModel.from_pretrained(clap).audio_encoder
    else:
        from clapkit.core import create_audio_tower

        encoder = create_audio_tower(name, weights=weights, **overrides)
    if getattr(encoder, "num_classes", 0):
        encoder.reset_classifier(0)
    return encoder.train()


def classifier_logits(
    accelerator: Any, classifier: nn.Module, dataset: Any, *, batch_size: int
) -> Tensor:
    """The classifier's logits of every clip of ``dataset``, each process scoring a share.

    Call it on every process; the classifier is put in eval mode and back.

    Args:
        accelerator: the run's accelerator.
        classifier: an :class:`AudioClassifier` (not wrapped).
        dataset: an evaluation ``clapkit.data.ManifestDataset`` (items hold ``waveform``).
        batch_size: clips per forward pass.

    Returns:
        ``[len(dataset), classes]`` float32 logits on the CPU, in dataset order.
    """

    def score(share: list[int]) -> Tensor:
        rows = []
        for start in range(0, len(share), batch_size):
            chunk = share[start : start + batch_size]
            waveform = torch.stack([dataset[i]["waveform"] for i in chunk])
            with accelerator.autocast():
                rows.append(classifier(waveform.to(accelerator.device)).float().cpu())
        return torch.cat(rows)

    was_training = classifier.training
    classifier.eval()
    with torch.no_grad():
        logits = torch.cat(map_shares(accelerator, range(len(dataset)), score))
    classifier.train(was_training)
    return logits
