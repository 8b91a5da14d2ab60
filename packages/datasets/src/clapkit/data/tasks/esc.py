"""ESC-50 (Piczak 2015) and ESC50-Actions: the ESC-50 clips, all five folds as test data.

Layout (github.com/karolpiczak/ESC-50, the ``ESC-50-master`` folder): ``audio/*.wav`` named
``{fold}-{freesound id}-{take}-{target}.wav`` and ``meta/esc50.csv`` with the header
``filename,fold,target,category,esc10,src_file,take``.
"""

from __future__ import annotations

from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task, TaskLayoutError
from clapkit.data.tasks.layout import as_int, keep_present, read_table, record, require

ESC50_CLASSES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
)  # fmt: skip
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
ESC50_LAYOUT = "audio/{fold}-{src}-{take}-{target}.wav and meta/esc50.csv (ESC-50-master)"
ACTIONS_FILE = "meta/esc50_actions.csv"


def _esc50_rows(root: Path) -> list[tuple[str, ManifestRecord]]:
    """``(where, record)`` of every row of ``meta/esc50.csv``, checked against the file name."""
    table = require(root, "meta/esc50.csv", "ESC-50", "the metadata CSV " + str(ESC50_COLUMNS))
    audio = require(root, "audio", "ESC-50", "the folder of the 2,000 clips")
    rows = []
    for number, row in read_table(table, ESC50_COLUMNS):
        where = f"{table}:{number}"
        target = as_int(row["target"], where, "target")
        if not 0 <= target < len(ESC50_CLASSES) or ESC50_CLASSES[target] != row["category"]:
            raise TaskLayoutError(
                f"{where}: target {target} with category {row['category']!r}; ESC-50 has "
                f"target -> category {dict(enumerate(ESC50_CLASSES))}"
            )
        parts = Path(row["filename"]).stem.split("-")
        if len(parts) != 4 or parts[0] != row["fold"] or parts[3] != row["target"]:
            raise TaskLayoutError(
                f"{where}: file name {row['filename']!r} does not read "
                f"{{fold}}-{{src}}-{{take}}-{{target}}.wav with fold {row['fold']}, "
                f"target {target}"
            )
        clip = record(
            root,
            audio / row["filename"],
            labels=(row["category"],),
            fold=as_int(row["fold"], where, "fold"),
            esc10=row["esc10"] == "True",
        )
        rows.append((where, clip))
    return rows


def read_esc50(root: Path, split: str) -> tuple[list[ManifestRecord], tuple[str, ...], list[str]]:
    """ESC-50, every fold (``split`` is ``"all-folds"``)."""
    warnings: list[str] = []
    records = keep_present([r for _, r in _esc50_rows(root)], "ESC-50", False, warnings)
    return records, ESC50_CLASSES, warnings


def read_esc50_actions(
    root: Path, split: str
) -> tuple[list[ManifestRecord], tuple[str, ...], list[str]]:
    """ESC-50 clips with action labels from ``meta/esc50_actions.csv``.

    The action file's header is ``filename`` then one column per action; a cell is the
    fraction of raters who heard that action (0-1), and an action is a label of the clip when
    at least half did. Clips the action file does not list are left out.
    """
    clips = {r.audio.name: r for _, r in _esc50_rows(root)}
    table = require(root, ACTIONS_FILE, "ESC50-Actions", "filename + one rating column per action")
    rows = read_table(table, ("filename",))
    if not rows:
        raise TaskLayoutError(f"{table}: no rows; expected one row per rated ESC-50 clip")
    actions = tuple(name for name in rows[0][1] if name != "filename")
    records = []
    for number, row in rows:
        where = f"{table}:{number}"
        if row["filename"] not in clips:
            raise TaskLayoutError(f"{where}: {row['filename']!r} is not in meta/esc50.csv")
        try:
            ratings = {action: float(row[action]) for action in actions}
        except ValueError as error:
            raise TaskLayoutError(f"{where}: ratings must be numbers in [0, 1] ({error})") from None
        base = clips[row["filename"]]
        labels = tuple(a for a in actions if ratings[a] >= 0.5)
        records.append(
            ManifestRecord(base.audio, labels=labels, key=base.key, extra=dict(base.extra))
        )
    warnings: list[str] = []
    if len(actions) != 20:
        warnings.append(f"ESC50-Actions: {table} has {len(actions)} actions, the paper 20")
    return keep_present(records, "ESC50-Actions", False, warnings), actions, warnings


ESC_TASKS = (
    Task(
        name="esc50",
        title="ESC50",
        kind="multiclass",
        reader=read_esc50,
        splits=(("all-folds", 2000),),
        class_names=ESC50_CLASSES,
        templates=SOUND_TEMPLATES,
        metrics=("accuracy",),
        paper=(("table1/HTSAT-22+GPT2", 0.882), ("table2/CLAP 2023", 0.939)),
        download="https://github.com/karolpiczak/ESC-50",
        license="CC BY-NC 3.0",
        layout=ESC50_LAYOUT,
    ),
    Task(
        name="esc50-actions",
        title="ESC50-Actions",
        kind="multilabel",
        reader=read_esc50_actions,
        splits=(("all-folds", 2000),),
        templates=SOUND_TEMPLATES,
        metrics=("mAP",),
        chance=0.045,
        paper=(("table1/HTSAT-22+GPT2", 0.475), ("table2/CLAP 2023", 0.509)),
        download="ESC-50 (github.com/karolpiczak/ESC-50) + the action ratings of its authors",
        license="CC BY-NC 3.0 (ESC-50 audio)",
        layout=f"the ESC-50 layout plus {ACTIONS_FILE} (filename, one rating column per action)",
    ),
)
