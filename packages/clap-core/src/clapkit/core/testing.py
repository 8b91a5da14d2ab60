"""Test doubles for code that talks to the Hugging Face Hub.

:class:`RecordingHubApi` takes the place of ``huggingface_hub.HfApi`` wherever clapkit accepts
an ``api=`` (``push_folder_to_hub``, ``TrainingRecipe.push_best``, ``evaluate.py``'s
``push_evaluated``): it records the calls instead of sending them, so a test (or a dry run) can
check what a push would upload without a network or a token::

    api = RecordingHubApi()
    push_folder_to_hub("runs/demo/best", "me/clap", api=api)
    api.uploaded()["README.md"]          # the card that would have gone up
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["RecordingHubApi"]


class RecordingHubApi:
    """Records ``create_repo`` and ``create_commit`` calls instead of sending them.

    Args:
        commit_url: what ``create_commit`` answers as the commit's ``commit_url``.

    Attributes:
        calls: ``(method name, keyword arguments with repo_id)`` of every call, in order.
    """

    def __init__(self, commit_url: str = "https://hub/commit/1") -> None:
        self.commit_url = commit_url
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        """Record the repository's creation."""
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, repo_id: str, **kwargs: Any) -> Any:
        """Record the commit; answer an object with ``commit_url``."""
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
        return type("Commit", (), {"commit_url": self.commit_url})()

    def uploaded(self) -> dict[str, bytes]:
        """Path in the repository -> content, of the last call's commit.

        Raises:
            AssertionError: the last call was not a ``create_commit``.
        """
        name, commit = self.calls[-1]
        assert name == "create_commit", f"the last call was {name}, not create_commit"
        files = {}
        for operation in commit["operations"]:
            content = operation.path_or_fileobj
            if isinstance(content, (str, os.PathLike)):
                content = Path(content).read_bytes()
            elif not isinstance(content, (bytes, bytearray)):
                content = content.read()
            files[operation.path_in_repo] = bytes(content)
        return files
