"""ESC-50 (Piczak 2015) and ESC50-Actions: the ESC-50 clips, all five folds as test data.

Layout (github.com/karolpiczak/ESC-50, the ``ESC-50-master`` folder): ``audio/*.wav`` named
``{fold}-{freesound id}-{take}-{target}.wav`` and ``meta/esc50.csv`` with the header
``filename,fold,target,category,esc10,src_file,take``.
"""

from __future__ import annotations

from pathlib import Path

from clapkit.data.manifest import ManifestRecord
from clapkit.data.tasks.base import SOUND_TEMPLATES, Task, TaskFileNotFoundError, TaskLayoutError
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
# github.com/bmartin1/Identifying_Actions_for_Sound_Event_Classification, action_vectors_dataset/
ACTIONS_FILE = "actionvector_one_per_audiofile_sum.csv"
ACTIONS_FOLDERS = ("meta", "action_vectors_dataset")
ACTIONS_KEYS = ("filename", "fold", "target", "category")
ACTIONS = (
    "blowing", "breaking", "calling", "crumpling", "dripping", "exhaling", "exploding",
    "gasping", "groaning", "pouring", "ringing", "rolling", "rotating", "scraping", "singing",
    "sizzling", "splashing", "tapping", "vibrating", "wailing",
)  # fmt: skip
# Measured on the published file (2,000 clips): sum >= 6 / 7 / 8 gives label prevalence
# .061 / .048 / .035 (1.22 / 0.96 / 0.71 actions per clip); the paper's random mAP is .045.
ACTION_MIN_SUM = 7


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


def _actions_table(root: Path) -> Path:
    """The published action file, under ``meta/`` or ``action_vectors_dataset/``."""
    for folder in ACTIONS_FOLDERS:
        if (root / folder / ACTIONS_FILE).is_file():
            return root / folder / ACTIONS_FILE
    raise TaskFileNotFoundError(
        f"ESC50-Actions: {ACTIONS_FILE} not found under {root}/meta or "
        f"{root}/action_vectors_dataset; it is published in github.com/bmartin1/"
        "Identifying_Actions_for_Sound_Event_Classification (action_vectors_dataset/)"
    )


def read_esc50_actions(
    root: Path, split: str
) -> tuple[list[ManifestRecord], tuple[str, ...], list[str]]:
    """ESC-50 clips with the action labels of ``actionvector_one_per_audiofile_sum.csv``.

    The file (header ``filename,fold,target,category`` then the 20 actions) holds per clip and
    action the sum of three listeners' 0-4 ratings (0-12). An action is a label of the clip
    when the sum is at least ``ACTION_MIN_SUM`` (7: a mean rating above 2, "fairly likely"):
    on the published file that gives a label prevalence of .048 (0.96 actions per clip), the
    nearest integer rule to the paper's random-guess mAP of .045.
    """
    clips = {r.audio.name: r for _, r in _esc50_rows(root)}
    table = _actions_table(root)
    columns = (*ACTIONS_KEYS, *ACTIONS)
    rows = read_table(table, columns)
    if not rows:
        raise TaskLayoutError(f"{table}: no rows; expected one row per ESC-50 clip")
    records = []
    for number, row in rows:
        where = f"{table}:{number}"
        base = clips.get(row["filename"])
        if base is None:
            raise TaskLayoutError(f"{where}: {row['filename']!r} is not in meta/esc50.csv")
        if base.labels[0] != row["category"] or str(base.extra["fold"]) != row["fold"]:
            raise TaskLayoutError(
                f"{where}: fold {row['fold']}, category {row['category']!r} disagree with "
                f"meta/esc50.csv (fold {base.extra['fold']}, {base.labels[0]!r})"
            )
        try:
            sums = {action: float(row[action]) for action in ACTIONS}
        except ValueError as error:
            raise TaskLayoutError(f"{where}: rating sums must be numbers ({error})") from None
        odd = {a: v for a, v in sums.items() if not 0 <= v <= 12}
        if odd:
            raise TaskLayoutError(f"{where}: rating sums {odd} outside 0-12 (3 listeners x 0-4)")
        labels = tuple(a for a in ACTIONS if sums[a] >= ACTION_MIN_SUM)
        records.append(
            ManifestRecord(
                base.audio, labels=labels, key=base.key, extra={**base.extra, "ratings": sums}
            )
        )
    warnings: list[str] = []
    unrated = len(clips) - len(records)
    if unrated:
        warnings.append(f"ESC50-Actions: {unrated} ESC-50 clips have no row in {table}")
    return keep_present(records, "ESC50-Actions", False, warnings), ACTIONS, warnings


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
        checked="github.com/karolpiczak/ESC-50: meta/esc50.csv",
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
        class_names=ACTIONS,
        download=(
            "ESC-50 + github.com/bmartin1/Identifying_Actions_for_Sound_Event_Classification "
            f"(action_vectors_dataset/{ACTIONS_FILE})"
        ),
        license="CC BY-NC 3.0 (ESC-50 audio); Apache 2.0 (action ratings)",
        layout=f"the ESC-50 layout plus {{meta,action_vectors_dataset}}/{ACTIONS_FILE}",
        checked=(
            "github.com/bmartin1/Identifying_Actions_for_Sound_Event_Classification: "
            "action_vectors_dataset/actionvector_one_per_audiofile_sum.csv"
        ),
    ),
)
