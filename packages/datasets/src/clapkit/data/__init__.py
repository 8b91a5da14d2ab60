"""Data for CLAP training and evaluation: manifests, datasets, collation, tar shards.

Decoding and cropping follow the audio encoder's front end (``clapkit.audio.FrontendConfig``).
"""

from clapkit.data.collate import ClapCollator, SkippedFiles
from clapkit.data.dataset import (
    ClapExample,
    ClipLoader,
    ManifestDataset,
    SkippedItem,
    item_generator,
)
from clapkit.data.manifest import (
    ManifestError,
    ManifestRecord,
    read_manifest,
    records_from_folder,
    write_manifest,
)
from clapkit.data.shards import ShardDataset, resolve_shards, write_shards

__all__ = [
    "ClapCollator",
    "ClapExample",
    "ClipLoader",
    "ManifestDataset",
    "ManifestError",
    "ManifestRecord",
    "ShardDataset",
    "SkippedFiles",
    "SkippedItem",
    "item_generator",
    "read_manifest",
    "records_from_folder",
    "resolve_shards",
    "write_manifest",
    "write_shards",
]
