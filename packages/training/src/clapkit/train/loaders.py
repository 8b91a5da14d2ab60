"""Training data loaders under accelerate: data accelerate splits, and data that splits itself.

A map-style dataset (a manifest) goes through ``accelerator.prepare``: its seedable sampler
gives each process every ``num_processes``-th batch of one shuffled order. Tar shards
(``clapkit.data.ShardDataset``) already split themselves, by shard, per rank and per
DataLoader worker; accelerate must not split them again, and it would in both of its modes:

- ``dispatch_batches=True`` (its default for an ``IterableDataset``): only rank 0 iterates the
  loader and sends slices of its batches to the others, so rank 0's share of the shards is
  all that is read, and the other ranks' shards are never seen;
- ``dispatch_batches=False``: each rank's loader is wrapped in ``IterableDatasetShard``, which
  keeps one ``num_processes``-th of every rank's own stream: each rank sees a fraction of a
  fraction, the rest is decoded and dropped.

So :func:`prepare_train_loader` leaves a self-splitting loader unprepared
(:class:`SelfSplitLoader`: batches moved to the device, a known length per epoch, resumable by
skipping batches)::

    data = build_train_data(frontend, tokenize, manifest=None, shards=["train-{0000..0099}.tar"],
                            batch_size=64, seed=0, rank=0, num_processes=2, num_workers=4,
                            samples_per_epoch=100_000)
    loader = prepare_train_loader(accelerator, data.loader, splits_itself=data.splits_itself,
                                  batches_per_epoch=data.batches_per_epoch)
    for batch in skip_batches(accelerator, loader, progress.batches_in_epoch): ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

__all__ = [
    "SelfSplitLoader",
    "TrainData",
    "build_train_data",
    "loader_options",
    "prepare_train_loader",
    "shard_batches_per_epoch",
    "skip_batches",
]


def shard_batches_per_epoch(
    samples_per_epoch: int, *, batch_size: int, num_workers: int, num_processes: int
) -> int:
    """Batches one process takes per epoch from a ``ShardDataset`` with ``samples_per_epoch``.

    Every global worker (``num_processes x max(num_workers, 1)`` of them) yields
    ``samples_per_epoch // workers_in_total`` clips and batches them alone (``drop_last``).

    Args:
        samples_per_epoch: clips per epoch over all processes and workers.
        batch_size: clips per batch.
        num_workers: DataLoader workers per process (0 = the main process reads).
        num_processes: processes.

    Returns:
        The batches per process and epoch.

    Raises:
        SystemExit: an epoch too small for one batch per worker.
    """
    workers = max(num_workers, 1)
    quota = samples_per_epoch // (workers * num_processes)
    if quota < batch_size:
        raise SystemExit(
            f"--samples-per-epoch {samples_per_epoch} gives each of the {workers * num_processes}"
            f" shard readers {quota} clips, less than one batch of {batch_size}"
        )
    return workers * (quota // batch_size)


class SelfSplitLoader:
    """A DataLoader whose dataset splits itself per rank, left unprepared by accelerate.

    Args:
        loader: the DataLoader (its dataset has ``set_epoch``).
        device: where the batches' tensors go.
        batches_per_epoch: this process's batches per epoch (see
            :func:`shard_batches_per_epoch`), or None when unknown.
    """

    def __init__(self, loader: Any, device: Any, batches_per_epoch: int | None) -> None:
        self.loader, self.device, self.batches_per_epoch = loader, device, batches_per_epoch
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """The dataset's shard order, crops and captions of ``epoch``."""
        self.loader.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("the number of batches per epoch is unknown (no samples_per_epoch)")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        from accelerate.utils import send_to_device  # type: ignore[import-untyped]

        from clapkit.data import give_back

        skip, self.skip = self.skip, 0
        for index, batch in enumerate(self.loader):
            if index < skip:  # read again, passed over: its worker's buffer goes back
                give_back(batch)
                continue
            yield send_to_device(batch, self.device)


def prepare_train_loader(
    accelerator: Any, loader: Any, *, splits_itself: bool, batches_per_epoch: int | None = None
) -> Any:
    """``accelerator.prepare(loader)``, or a :class:`SelfSplitLoader` for self-splitting data.

    Args:
        accelerator: the run's accelerator.
        loader: the training DataLoader.
        splits_itself: its dataset reads only this rank's share (tar shards).
        batches_per_epoch: with ``splits_itself``: this process's batches per epoch.

    Returns:
        The loader to iterate.
    """
    if not splits_itself:
        return accelerator.prepare(loader)
    return SelfSplitLoader(loader, accelerator.device, batches_per_epoch)


def skip_batches(accelerator: Any, loader: Any, batches: int) -> Any:
    """The loader without its first ``batches`` batches of this epoch (a mid-epoch resume).

    Args:
        accelerator: the run's accelerator.
        loader: what :func:`prepare_train_loader` returned.
        batches: batches already consumed in this epoch.

    Returns:
        The loader to iterate for the rest of the epoch.
    """
    if not batches:
        return loader
    if isinstance(loader, SelfSplitLoader):
        loader.skip = batches  # the stream is read again and its first batches dropped
        return loader
    return accelerator.skip_first_batches(loader, batches)


@dataclasses.dataclass
class TrainData:
    """A run's training data: the dataset, its (unprepared) loader, how it splits.

    Attributes:
        dataset: a ``ManifestDataset`` or a ``ShardDataset`` (``set_epoch``).
        loader: its DataLoader, before :func:`prepare_train_loader`.
        splits_itself: tar shards (read per rank), not split by accelerate.
        batches_per_epoch: shards: this process's batches per epoch (None: one pass of unknown
            length); a manifest: None (``len`` of the prepared loader).
    """

    dataset: Any
    loader: Any
    splits_itself: bool
    batches_per_epoch: int | None = None


def loader_options(
    num_workers: int, prefetch_factor: int | None = None, *, persistent: bool = True
) -> dict[str, Any]:
    """The DataLoader arguments every training loader shares, for ``num_workers`` workers.

    With workers, they persist across epochs (their processes, open decoders and resampling
    kernels stay; the datasets' epoch is shared memory, ``clapkit.data.SharedEpoch``, so the
    recipe sets it before ``iter(loader)``) and each prepares ``prefetch_factor`` batches
    ahead. On CUDA, batches are pinned so that their copy to the GPU does not block the host.

    Args:
        num_workers: DataLoader worker processes (0: loading in the main process).
        prefetch_factor: batches each worker prepares ahead (None: torch's default, 2).
        persistent: False when the main process changes the dataset between epochs other than
            by ``set_epoch`` (fine-tuning's folds): workers started afresh see the change.

    Returns:
        ``num_workers``, ``pin_memory`` and, with workers, ``persistent_workers`` and
        ``prefetch_factor``.
    """
    import torch

    options: dict[str, Any] = {
        "num_workers": num_workers, "pin_memory": torch.cuda.is_available(),
    }  # fmt: skip
    if num_workers:
        options["persistent_workers"] = persistent
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
    return options


def batch_buffers(num_workers: int, prefetch_factor: int | None = None) -> Any:
    """The shared-memory batch buffers a training loader's workers reuse
    (:class:`clapkit.data.BatchBuffers`), or None without workers.

    Each worker gets ``prefetch_factor`` + 2 buffers: its batches in flight, the one the loop
    holds and the one accelerate's loader reads ahead. The loop gives every batch back
    (:meth:`clapkit.train.loop.TrainingLoop.epoch_batches`).
    """
    from clapkit.data import BatchBuffers

    if not num_workers:
        return None
    return BatchBuffers(slots=(2 if prefetch_factor is None else prefetch_factor) + 2)


def build_train_data(
    frontend: Any,
    tokenize: Callable[[list[str]], Any],
    *,
    manifest: str | None,
    shards: Sequence[str] = (),
    batch_size: int,
    seed: int,
    rank: int = 0,
    num_processes: int = 1,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    samples_per_epoch: int | None = None,
    shuffle_buffer: int = 2000,
    resampled: bool = False,
    cache_audio: bool = False,
    shift_short_clips: bool = False,
    on_error: Literal["skip", "raise"] = "skip",
) -> TrainData:
    """The training data of a contrastive run: a manifest, or tar shards read per rank.

    Args:
        frontend: the training front end (the encoder's, with the training crop).
        tokenize: the text encoder's tokenizer (the collator tokenizes captions).
        manifest: the training manifest, read when there are no ``shards``.
        shards: WebDataset shard specs (``clapkit.data.ShardDataset``: folders, globs, brace
            ranges, ``pipe:``, URLs, ``NAME=SPEC:WEIGHT`` sources).
        batch_size: clips per batch on this process.
        seed: the data's seed (crops, captions, shuffles).
        rank: this process's index.
        num_processes: how many processes train.
        num_workers: DataLoader workers (persistent: :func:`loader_options`).
        prefetch_factor: batches each worker prepares ahead.
        samples_per_epoch: shards: clips per epoch over all processes (needed with several
            processes, so that every rank takes the same number of steps).
        shuffle_buffer: shards: compressed samples shuffled in each worker's buffer.
        resampled: shards: drawn with replacement (epochs without a pass over the data).
        cache_audio: a manifest's decoded clips kept in memory.
        shift_short_clips: clips shorter than the crop placed at a random offset.
        on_error: a bad file skipped (named, counted) or fatal.

    Returns:
        The dataset and its loader (shuffled with its own seeded generator for a manifest; with
        workers, they persist across epochs: set the dataset's epoch before ``iter(loader)``).

    Raises:
        SystemExit: shards on several processes without ``samples_per_epoch`` (ranks would
            take different numbers of steps and hang), no manifest and no shards, or an epoch
            too small for a batch.
    """
    import torch
    from torch.utils.data import DataLoader

    from clapkit.data import ClapCollator, ManifestDataset, ShardDataset

    common: dict[str, Any] = {"train": True, "seed": seed, "on_error": on_error}
    batches: int | None = None
    shuffle: dict[str, Any] = {}
    if shards:
        if samples_per_epoch is None and num_processes > 1:
            raise SystemExit(
                "--train-shards with several processes needs --samples-per-epoch "
                "(every rank must take the same number of steps)"
            )
        dataset: Any = ShardDataset(
            shards[0] if len(shards) == 1 else list(shards), frontend,
            samples_per_epoch=samples_per_epoch, rank=rank, world_size=num_processes,
            shuffle_buffer=shuffle_buffer, resampled=resampled, **common,
        )  # fmt: skip
        if samples_per_epoch is not None:
            batches = shard_batches_per_epoch(
                samples_per_epoch, batch_size=batch_size, num_workers=num_workers,
                num_processes=num_processes,
            )  # fmt: skip
    else:
        if manifest is None:
            raise SystemExit("give --train-manifest or --train-shards")
        dataset = ManifestDataset(
            manifest, frontend, cache_audio=cache_audio, shift_short_clips=shift_short_clips,
            **common,
        )  # fmt: skip
        shuffle = {"shuffle": True, "generator": torch.Generator().manual_seed(seed)}
    loader = DataLoader(
        dataset, batch_size=batch_size, drop_last=True,
        collate_fn=ClapCollator(tokenize, buffers=batch_buffers(num_workers, prefetch_factor)),
        **loader_options(num_workers, prefetch_factor), **shuffle,
    )  # fmt: skip
    return TrainData(dataset, loader, bool(shards), batches)
