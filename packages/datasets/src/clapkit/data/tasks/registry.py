"""The task registry: every task of the paper by name, and the task lists of Tables 1 and 2."""

from __future__ import annotations

from types import MappingProxyType

from clapkit.data.tasks.base import Task
from clapkit.data.tasks.captions import CAPTION_TASKS
from clapkit.data.tasks.esc import ESC_TASKS
from clapkit.data.tasks.nsynth import NSYNTH_TASKS
from clapkit.data.tasks.scenes_music import SCENE_MUSIC_TASKS
from clapkit.data.tasks.sound_events import SOUND_EVENT_TASKS
from clapkit.data.tasks.speech import SPEECH_TASKS

_ALL = (
    *ESC_TASKS,
    *SOUND_EVENT_TASKS,
    *SCENE_MUSIC_TASKS,
    *NSYNTH_TASKS,
    *SPEECH_TASKS,
    *CAPTION_TASKS,
)
TASKS: MappingProxyType[str, Task] = MappingProxyType({task.name: task for task in _ALL})

# Table 1's 16 columns, in the paper's order.
TABLE1_TASKS = (
    "esc50", "fsd50k", "us8k", "dcase17-t4", "vocalsound", "sesa", "esc50-actions", "tut2017",
    "gtzan-ms", "gtzan-genres", "beijing-opera", "nsynth-instrument", "crema-d", "ravdess",
    "speech-commands", "libricount",
)  # fmt: skip
# Table 2's 26 rows, in the paper's order; a retrieval task covers two rows (a2t and t2a).
TABLE2_TASKS = (
    "esc50", "fsd50k", "us8k", "dcase17-t4", "audioset", "vocalsound", "sesa", "esc50-actions",
    "tut2017", "gtzan-ms", "gtzan-genres", "nsynth-pitch", "nsynth-velocity", "nsynth-qualities",
    "beijing-opera", "nsynth-instrument", "crema-d", "ravdess", "speech-commands", "libricount",
    "audiocaps-caption", "clotho-caption", "audiocaps", "clotho",
)  # fmt: skip


def list_tasks() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``.

    Args:
        name: a registry name (``"esc50"``, ``"nsynth-pitch"``, ...).

    Returns:
        The task.

    Raises:
        KeyError: the name is unknown; the message lists the known names.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {list_tasks()}") from None
