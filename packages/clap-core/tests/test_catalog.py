"""Weights by name: the catalog's data, download from a local file server, SHA-256, the cache."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from clapkit.audio import cnn14_encoder
from clapkit.core import (
    ChecksumError,
    ClapModel,
    UnverifiedWeightsWarning,
    list_pretrained,
    named_folder,
    pretrained_audio_encoder,
    pretrained_table,
)
from clapkit.core.catalog import read_catalog, sha256_of

TINY = {"channels": [8, 16, 32], "out_dim": 32, "num_classes": 5}


def test_the_packaged_catalog_is_well_formed() -> None:
    rows = list_pretrained()
    names = [row.name for row in rows]
    assert {"msclap-2023", "msclap-2022", "clapcap-2023", "panns-cnn14"} <= set(names)
    for row in rows:
        assert row.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", row.sha256), row.name
        assert row.licence
        assert row.paper
    assert [r.name for r in list_pretrained("captioner")] == ["clapcap-2023"]
    assert read_catalog()["msclap-2023"].source == "hf://microsoft/msclap/CLAP_weights_2023.pth"
    table = pretrained_table()
    assert (
        "| msclap-2023 | clap | hf://microsoft/msclap/CLAP_weights_2023.pth | not verified |"
        in table
    )
    assert "ESC50 acc 0.939" in table


def _panns_file(path: Path) -> dict[str, torch.Tensor]:
    """A tiny CNN14 written as PANNs writes its checkpoints (reference names, under 'model')."""
    torch.manual_seed(0)
    encoder = cnn14_encoder(**TINY)  # type: ignore[arg-type]
    renamed = {}
    for key, value in encoder.state_dict().items():
        name = key.replace("log_mel.bn0.", "bn0.").replace("embed.", "fc1.")
        name = name.replace("head.", "fc_audioset.")
        name = re.sub(r"^blocks\.(\d+)\.", lambda m: f"conv_block{int(m.group(1)) + 1}.", name)
        renamed[name] = value
    torch.save({"model": renamed}, path)
    return encoder.state_dict()


class _Counting(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local file server over a folder: (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_Counting, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Counting.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def _use_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rows: list[dict[str, Any]]
) -> Path:
    catalog = tmp_path / "catalog.json"
    defaults = {"repo_id": None, "licence": "CC0", "paper": "a test", "options": {}}
    catalog.write_text(json.dumps({"weights": [defaults | row for row in rows]}))
    monkeypatch.setenv("CLAPKIT_CATALOG", str(catalog))
    monkeypatch.setenv("CLAPKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_encoder_by_name_is_downloaded_checked_converted_and_cached_once(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = server
    expected = _panns_file(root / "Cnn14_tiny.pth")
    row = {"kind": "audio-encoder", "format": "panns", "filename": "Cnn14_tiny.pth",
           "url": f"{base}/Cnn14_tiny.pth", "options": TINY}  # fmt: skip
    cache = _use_catalog(monkeypatch, tmp_path, [
        row | {"name": "tiny-panns", "sha256": sha256_of(root / "Cnn14_tiny.pth")},
        row | {"name": "tiny-panns-bad", "sha256": "0" * 64},
        row | {"name": "tiny-panns-unverified", "sha256": None},
    ])  # fmt: skip
    encoder = pretrained_audio_encoder("tiny-panns")
    for key, value in expected.items():
        assert torch.equal(encoder.state_dict()[key], value), key
    assert _Counting.requests == ["/Cnn14_tiny.pth"]
    again = pretrained_audio_encoder("tiny-panns")  # the converted folder: no download
    assert _Counting.requests == ["/Cnn14_tiny.pth"]
    assert torch.equal(again.state_dict()["embed.weight"], expected["embed.weight"])
    assert (cache / "converted" / f"tiny-panns-{sha256_of(root / 'Cnn14_tiny.pth')[:12]}").is_dir()
    pretrained_audio_encoder("tiny-panns", force_download=True)
    assert len(_Counting.requests) == 2

    with pytest.raises(ChecksumError, match=r"^tiny-panns-bad: .*Cnn14_tiny\.pth has SHA-256 "
                       r"[0-9a-f]{64}, but http://127\.0\.0\.1:\d+/Cnn14_tiny\.pth is published "
                       r"with 0{64}: a damaged or different file"):  # fmt: skip
        pretrained_audio_encoder("tiny-panns-bad")
    assert not list((cache / "converted").glob("tiny-panns-bad*"))  # nothing cached
    with pytest.warns(
        UnverifiedWeightsWarning, match=r"^tiny-panns-unverified: .* was not verified"
    ):
        pretrained_audio_encoder("tiny-panns-unverified")
    with pytest.raises(KeyError, match="no audio encoder named 'cnn-99'"):
        pretrained_audio_encoder("cnn-99")


def test_a_clap_name_loads_its_cached_converted_folder_without_the_network(
    tiny_model: Any, fsdd_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = "ab" * 32
    cache = _use_catalog(monkeypatch, tmp_path, [{
        "name": "tiny-msclap", "kind": "clap", "format": "msclap", "filename": "w.pth",
        "url": "http://127.0.0.1:9/w.pth", "sha256": digest,  # nothing listens on port 9
    }])  # fmt: skip
    tiny_model.save_pretrained(cache / "converted" / f"tiny-msclap-{digest[:12]}")
    loaded = ClapModel.from_pretrained("tiny-msclap")
    expected = tiny_model.embed_audio(fsdd_files[:2])
    assert torch.allclose(loaded.embed_audio(fsdd_files[:2]), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"^'tiny-msclap' names clap weights, not captioner"):
        named_folder("tiny-msclap", "captioner", lambda *args: None, {})
