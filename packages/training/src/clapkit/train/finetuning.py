"""Classification fine-tuning of an audio encoder: the classifier, its folder, the data and folds.

An :class:`AudioClassifier` is an audio encoder (any ``clapkit.audio`` encoder) with a linear head
on its embedding. In ``linear-probe`` mode the encoder is frozen, BatchNorm statistics included
(it stays in eval mode); in ``full`` mode everything trains. It saves as a folder
(``config.json`` + ``model.safetensors``) and loads back strictly::

    encoder = build_encoder("htsat-22", weights="htsat22.safetensors")   # or clap="runs/x/best"
    model = AudioClassifier(encoder, class_names=names, mode="full")
    model.save_pretrained("best"); AudioClassifier.from_pretrained("best")

Data comes from a task reader (``esc50=/data/ESC-50-master``, :mod:`clapkit.data.tasks`) or a
labelled manifest; :func:`cross_validation_folds` splits it by each clip's fold (the ``fold`` the
ESC-50 reader records, or any manifest field such as ``speaker``): train on the other folds,
test on one, every fold in turn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "CLASSIFIER_FORMAT",
    "AudioClassifier",
    "CrossValidation",
    "Fold",
    "Mode",
    "build_encoder",
    "classification_scores",
    "cross_validation_folds",
    "fold_of",
    "load_classification_data",
    "target_tensor",
]

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
        from clapkit.core import create_audio_encoder

        encoder = create_audio_encoder(name, weights=weights, **overrides)
    if getattr(encoder, "num_classes", 0):
        encoder.reset_classifier(0)
    return encoder.train()


def load_classification_data(source: str, templates: Sequence[str] = ()) -> Any:
    """A classification task's clips: ``NAME=PATH`` (a task reader) or a labelled manifest.

    Args:
        source: ``esc50=/data/ESC-50-master`` (any multiclass or multilabel task of
            :mod:`clapkit.data.tasks`, read from its official layout) or a ``.jsonl`` manifest
            whose lines carry ``labels``.
        templates: zero-shot prompt templates of a manifest task (default: the sound template).

    Returns:
        ``clapkit.data.tasks.TaskData`` (records, class names, warnings).

    Raises:
        SystemExit: a task that is not a classification task, or a missing manifest.
    """
    from clapkit.data.tasks import get_task, manifest_task

    name, sep, path = source.partition("=")
    if sep:
        task = get_task(name)
        if task.kind not in ("multiclass", "multilabel"):
            raise SystemExit(f"--data {name}: a {task.kind} task is not a classification task")
        return task.load(path)
    if not Path(source).is_file():
        raise SystemExit(f"--data {source}: no such manifest (or give NAME=PATH for a task)")
    return manifest_task(source, templates).load(Path(source).parent)


def fold_of(record: Any, field: str) -> str:
    """The fold a clip belongs to, as text.

    Read from the record's ``extra[field]`` (the ESC-50 reader's ``fold``, a manifest's
    ``speaker``...); for ``field == "fold"`` an ESC-50 file name ``{fold}-{src}-{take}-{target}``
    is a fallback.

    Args:
        record: a ``clapkit.data.ManifestRecord``.
        field: the field naming the fold.

    Returns:
        The fold's name.

    Raises:
        ValueError: the record has no such field (named with the clip).
    """
    value = record.extra.get(field)
    if value is None and field == "fold":
        parts = Path(record.audio).stem.split("-")
        if len(parts) == 4 and parts[0].isdigit():
            value = parts[0]
    if value is None:
        raise ValueError(
            f"clip {record.key or record.audio} has no {field!r} field to split folds by"
        )
    return str(value)


@dataclass(frozen=True)
class Fold:
    """One cross-validation rotation: the held-out fold's name and both record lists."""

    name: str
    train: tuple[Any, ...]
    test: tuple[Any, ...]


@dataclass
class CrossValidation:
    """Where a cross-validated run is, beside ``Progress`` (register it for checkpointing).

    Attributes:
        fold: index of the fold being trained.
        fold_start_step: the optimizer step at which this fold began (its schedule's origin).
        current: the fold's kept epoch record so far (``select`` last or best), or None.
        results: one record per finished fold (``fold``, ``epoch``, metric, ``score``...).
        zero_shot: the starting ClapModel's zero-shot score per fold name, if there was one.
    """

    fold: int = 0
    fold_start_step: int = 0
    current: dict[str, Any] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    zero_shot: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """The fields as a dict (what accelerate pickles)."""
        return {
            "fold": self.fold,
            "fold_start_step": self.fold_start_step,
            "current": self.current,
            "results": list(self.results),
            "zero_shot": dict(self.zero_shot),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the fields saved by `state_dict`."""
        for name, value in state.items():
            setattr(self, name, value)


def _fold_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def cross_validation_folds(
    records: Sequence[Any], field: str, test_folds: Sequence[str] = ()
) -> list[Fold]:
    """Leave-one-fold-out splits: train on the other folds, test on one.

    Args:
        records: every clip (``ManifestRecord``).
        field: the fold field (see :func:`fold_of`).
        test_folds: the folds held out in turn; empty = every fold (sorted, numbers first).

    Returns:
        One :class:`Fold` per held-out fold, in the given (or sorted) order.

    Raises:
        ValueError: fewer than two folds, or a requested fold that no clip has.
    """
    by_fold: dict[str, list[Any]] = {}
    for record in records:
        by_fold.setdefault(fold_of(record, field), []).append(record)
    names = sorted(by_fold, key=_fold_key)
    if len(names) < 2:
        raise ValueError(f"cross-validation needs >= 2 folds of {field!r}, found {names}")
    unknown = [str(f) for f in test_folds if str(f) not in by_fold]
    if unknown:
        raise ValueError(f"test folds {unknown} not found; the {field!r} folds are {names}")
    chosen = [str(f) for f in test_folds] or names
    return [
        Fold(
            name=name,
            train=tuple(r for other in names if other != name for r in by_fold[other]),
            test=tuple(by_fold[name]),
        )
        for name in chosen
    ]


def target_tensor(
    labels: Sequence[Sequence[str]], class_index: Mapping[str, int], *, multilabel: bool
) -> Tensor:
    """Float targets ``[b, c]``: one-hot (multiclass) or multi-hot (multilabel).

    Args:
        labels: each clip's labels (a batch's ``labels``).
        class_index: class name -> output index.
        multilabel: allow several labels per clip.

    Returns:
        ``[b, c]`` float32.

    Raises:
        ValueError: an unknown label, or a multiclass clip without exactly one label.
    """
    out = torch.zeros(len(labels), len(class_index))
    for row, names in enumerate(labels):
        if not multilabel and len(names) != 1:
            raise ValueError(f"a multiclass clip needs exactly one label, got {list(names)}")
        for name in names:
            if name not in class_index:
                raise ValueError(f"label {name!r} is not one of the classes {sorted(class_index)}")
            out[row, class_index[name]] = 1.0
    return out


def classification_scores(logits: Tensor, targets: Tensor, *, multilabel: bool) -> dict[str, float]:
    """Accuracy (multiclass) or macro mAP (multilabel) of a test fold, plus ``score``.

    Args:
        logits: ``[n, c]``.
        targets: ``[n, c]`` one-hot or multi-hot.
        multilabel: which metric.

    Returns:
        ``{"accuracy" | "mAP": value, "score": value, "n_clips": n}``.
    """
    from clapkit.core import accuracy, mean_average_precision

    if multilabel:
        value = float(mean_average_precision(torch.sigmoid(logits), targets))
        return {"mAP": value, "score": value, "n_clips": int(targets.shape[0])}
    value = float(accuracy(logits, targets.argmax(dim=1)))
    return {"accuracy": value, "score": value, "n_clips": int(targets.shape[0])}
