"""Data for CLAP training and evaluation: manifests, datasets, collation, WebDataset shards.

Decoding and cropping follow the audio encoder's front end (``clapkit.audio.FrontendConfig``).
"""

from clapkit.data.buffers import BUFFER_KEY, BatchBuffers, give_back
from clapkit.data.collate import ClapCollator, SkippedFiles
from clapkit.data.dataset import (
    ClapExample,
    ClipLoader,
    ManifestDataset,
    SkippedItem,
    item_generator,
)
from clapkit.data.epoch import SharedEpoch
from clapkit.data.manifest import (
    ManifestError,
    ManifestRecord,
    read_manifest,
    records_from_folder,
    write_manifest,
)
from clapkit.data.multitask import (
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskExample,
    MultiTaskRecord,
    WeightedTaskSampler,
    caption_records,
    classification_records,
    qa_records,
    read_multitask_manifest,
    task_records,
    write_multitask_manifest,
)
from clapkit.data.shard_sources import ShardSource, parse_sources, resolve_shards
from clapkit.data.shard_writer import write_shards
from clapkit.data.shards import ShardDataset, TarMember, shard_samples

__all__ = [
    "BUFFER_KEY",
    "BatchBuffers",
    "ClapCollator",
    "ClapExample",
    "ClipLoader",
    "ManifestDataset",
    "ManifestError",
    "ManifestRecord",
    "MultiTaskCollator",
    "MultiTaskDataset",
    "MultiTaskExample",
    "MultiTaskRecord",
    "ShardDataset",
    "ShardSource",
    "SharedEpoch",
    "SkippedFiles",
    "SkippedItem",
    "TarMember",
    "WeightedTaskSampler",
    "caption_records",
    "classification_records",
    "give_back",
    "item_generator",
    "parse_sources",
    "qa_records",
    "read_manifest",
    "read_multitask_manifest",
    "records_from_folder",
    "resolve_shards",
    "shard_samples",
    "task_records",
    "write_manifest",
    "write_multitask_manifest",
    "write_shards",
]
