"""The task registry: every task of the paper by name, and the task lists of Tables 1 and 2."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from clapkit.data.tasks.base import Task
from clapkit.data.tasks.captions import CAPTION_TASKS
from clapkit.data.tasks.esc import ESC_TASKS
from clapkit.data.tasks.nsynth import NSYNTH_TASKS
from clapkit.data.tasks.scenes_music import SCENE_MUSIC_TASKS
from clapkit.data.tasks.sound_events import SOUND_EVENT_TASKS
from clapkit.data.tasks.speech import SPEECH_TASKS

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
# The encoder ablation rows of Table 1 (119k pairs), one value per TABLE1_TASKS column; the
# HTSAT-22+GPT2 row is written with each task.
TABLE1_ROWS: dict[str, tuple[float, ...]] = {
    "CNN14+BERT": (
        .826, .302, .732, .300, .495, .749, .495, .296, 1.0, .252, .475, .295, .178, .160, .106,
        .179,
    ),
    "HTSAT+CLIP": (
        .813, .289, .748, .277, .645, .761, .442, .219, .992, .156, .627, .312, .208, .169, .120,
        .113,
    ),
    "HTSAT+RoBERTa": (
        .811, .322, .757, .226, .610, .745, .475, .285, .992, .178, .436, .352, .263, .200, .098,
        .149,
    ),
    "HTSAT+GPT2": (
        .819, .336, .767, .242, .646, .644, .503, .286, 1.0, .150, .539, .322, .234, .171, .139,
        .155,
    ),
    "HTSAT-22+RoBERTa": (
        .879, .388, .767, .209, .682, .656, .481, .369, 1.0, .209, .309, .402, .301, .278, .129,
        .207,
    ),
    "HTSAT-22+CLIP": (
        .830, .411, .791, .229, .692, .723, .488, .292, 1.0, .280, .517, .462, .275, .233, .116,
        .094,
    ),
}  # fmt: skip


def _with_table1_rows(task: Task) -> Task:
    if task.name not in TABLE1_TASKS:
        return task
    column = TABLE1_TASKS.index(task.name)
    rows = tuple((f"table1/{pair}", values[column]) for pair, values in TABLE1_ROWS.items())
    return dataclasses.replace(task, paper=rows + task.paper)


_ALL = (
    *ESC_TASKS,
    *SOUND_EVENT_TASKS,
    *SCENE_MUSIC_TASKS,
    *NSYNTH_TASKS,
    *SPEECH_TASKS,
    *CAPTION_TASKS,
)
TASKS: MappingProxyType[str, Task] = MappingProxyType(
    {task.name: _with_table1_rows(task) for task in _ALL}
)


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
