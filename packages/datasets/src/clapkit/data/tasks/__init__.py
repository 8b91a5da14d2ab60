"""Readers of the paper's evaluation datasets, each in the layout its publisher distributes.

>>> from clapkit.data.tasks import get_task
>>> data = get_task("esc50").load("ESC-50-master")    # doctest: +SKIP
>>> data.records[0].labels, data.prompts()[0]          # doctest: +SKIP
(('dog',), ['this is a sound of dog'])
"""

from clapkit.data.tasks.base import (
    COUNT_TEMPLATES,
    EMOTION_TEMPLATES,
    KEYWORD_TEMPLATES,
    SOUND_TEMPLATES,
    Task,
    TaskData,
    TaskFileNotFoundError,
    TaskKind,
    TaskLayoutError,
    humanize,
)
from clapkit.data.tasks.from_manifest import manifest_task
from clapkit.data.tasks.make_manifest import load_split, split_manifests
from clapkit.data.tasks.registry import TABLE1_TASKS, TABLE2_TASKS, TASKS, get_task, list_tasks

__all__ = [
    "COUNT_TEMPLATES",
    "EMOTION_TEMPLATES",
    "KEYWORD_TEMPLATES",
    "SOUND_TEMPLATES",
    "TABLE1_TASKS",
    "TABLE2_TASKS",
    "TASKS",
    "Task",
    "TaskData",
    "TaskFileNotFoundError",
    "TaskKind",
    "TaskLayoutError",
    "get_task",
    "humanize",
    "list_tasks",
    "load_split",
    "manifest_task",
    "split_manifests",
]
