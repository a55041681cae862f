"""Results a job could not write to its store, kept on disk until a store takes them.

A job records everything it logs (params, tags, every metric point, its text
artifacts, figures and files) in a `Journal` as it goes. When the store stops
taking writes (a call fails past `tracking.deadline_seconds`, or the store
refuses it), the job carries on offline and, when it ends, saves the journal in
the spool folder (`tracking.spool_dir`, by default `unsent/` in the folder the
command runs from): one folder per run with `run.json` and `artifacts/`, built in a
hidden staging folder and renamed into place when complete, so a partial entry
never appears. An entry that cannot be read, or that is not what a job writes
(see `check`: a spool folder is writable by others, so nothing in it is trusted), is
moved aside, whole, to `quarantine/` in the spool folder, and the others are recorded.

The next launch from that folder records each saved run in the store as a
complete run (`tracking.Store.record_spooled`) before any job looks for its
cell, so the cell is reused, not trained again; `python pipelines/sync.py`
does the same by hand. This module knows nothing of MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bnlab import names

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
ARTIFACTS = "artifacts"  # the run's artifact files, laid out as in the store
# Entries that could not be read, moved here (never deleted) for a person to look at.
QUARANTINE = "quarantine"
# The statuses a saved run ends with (a job saves its entry once it has ended).
ENDED = ("FINISHED", "FAILED", "KILLED")
DATASET_FIELDS = {"name", "digest", "source", "profile"}
MAX_RUN_NAME = 500


class BadEntry(ValueError):
    """A spool entry that is not what a job writes; the message says which field."""


def staging(root: Path, run_id: str) -> Path:
    """The hidden folder a run's entry is built in before it is renamed into place."""
    return Path(root) / f".{run_id}.partial"


@dataclass
class Journal:
    """Everything one run logged, in the order it was logged."""

    experiment: str = ""
    store: str = ""  # the store's URI, redacted: where the run belongs
    run_id: str = ""  # the run the job opened, which holds part of this at most
    name: str = ""
    start_time: int = 0
    end_time: int = 0
    status: str = "RUNNING"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # (key, value, timestamp in ms, step)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    datasets: list[dict[str, str]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    # Binary artifacts (figures as PNG) by artifact path; written as files when saved.
    blobs: dict[str, bytes] = field(default_factory=dict)
    # Local files to copy, by artifact path (e.g. the job's log file).
    files: dict[str, str] = field(default_factory=dict)

    def save(self, root: Path) -> Path:
        """Writes the journal to `root/<run id>/`; returns that folder.

        The entry is built in `staging(root, run id)` (which may already hold files
        copied there, such as a model) and renamed into place whole. When a write
        fails (a full disk), the staging folder is removed and the error raised.
        """
        folder = Path(root) / self.run_id
        build = staging(root, self.run_id)
        try:
            self._write(build)
            os.replace(build, folder)
        except OSError:
            shutil.rmtree(build, ignore_errors=True)
            raise
        return folder

    def _write(self, folder: Path) -> None:
        artifacts = folder / ARTIFACTS
        artifacts.mkdir(parents=True, exist_ok=True)
        for path, text in self.texts.items():
            _target(artifacts, path).write_text(text)
        for path, data in self.blobs.items():
            _target(artifacts, path).write_bytes(data)
        for path, source in self.files.items():
            if Path(source).is_file():
                shutil.copyfile(source, _target(artifacts, path))
        record = asdict(self)
        for key in ("texts", "blobs", "files"):
            record.pop(key)
        (folder / RUN_FILE).write_text(json.dumps(record, indent=1))


def _target(artifacts: Path, path: str) -> Path:
    target = artifacts / path
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@dataclass
class Saved:
    """A run saved in the spool: its journal and its artifact files."""

    folder: Path
    journal: Journal


def pending(root: Path) -> list[Saved]:
    """The complete runs saved under `root`, oldest first.

    An entry whose `run.json` cannot be read (not UTF-8, not JSON, not a journal) is
    moved to `root/quarantine/`, with one line saying so, and left out.
    """
    saved = []
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if folder.name.startswith(".") or folder.name == QUARANTINE:
            continue  # an entry being built, or the entries already moved aside
        if not folder.is_symlink() and not (folder / RUN_FILE).exists():
            continue  # not an entry (nothing a job saves lacks its run.json)
        try:
            journal = read(folder)
        except (OSError, ValueError, TypeError, KeyError) as error:
            quarantine(folder, error)
            continue
        saved.append(Saved(folder, journal))
    return sorted(saved, key=lambda entry: entry.journal.start_time)


def read(folder: Path) -> Journal:
    """The journal of the entry in `folder`, once `check` found nothing wrong with it."""
    if folder.is_symlink() or (folder / RUN_FILE).is_symlink():
        raise BadEntry("the entry or its run.json is a symbolic link")
    record = json.loads((folder / RUN_FILE).read_text())
    if not isinstance(record, dict):
        raise BadEntry("run.json does not hold a journal")
    if isinstance(record.get("metrics"), list):
        record["metrics"] = [
            tuple(point) if isinstance(point, list) else point for point in record["metrics"]
        ]
    journal = Journal(**record)
    check(folder, journal)
    return journal


def _text_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


def _time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _point(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 4
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
        and all(isinstance(part, int) and not isinstance(part, bool) for part in value[2:])
    )


def check(folder: Path, journal: Journal) -> None:
    """Raises BadEntry unless the entry holds exactly what a job writes.

    Its run id is an MLflow run id and names its folder; its experiment is a plain name;
    every field has its type; its status is an ended one; and its artifacts are plain
    files and folders inside it (no symbolic link, which could point at any file).
    """
    if not names.is_run_id(journal.run_id):
        raise BadEntry(f"run_id: not an MLflow run id, got {str(journal.run_id)[:40]!r}")
    if folder.name != journal.run_id:
        raise BadEntry(f"run_id: {journal.run_id} does not name its folder {folder.name!r}")
    refused = names.problem(journal.experiment)
    if refused:
        raise BadEntry(f"experiment: {refused}")
    if not isinstance(journal.store, str) or not isinstance(journal.name, str):
        raise BadEntry("store and name: must be text")
    if len(journal.name) > MAX_RUN_NAME or not journal.name.isprintable():
        raise BadEntry(f"name: must be printable and at most {MAX_RUN_NAME} characters")
    if journal.status not in ENDED:
        raise BadEntry(f"status: must be one of {', '.join(ENDED)}, got {journal.status!r}")
    if not (_time(journal.start_time) and _time(journal.end_time)):
        raise BadEntry("start_time and end_time: must be whole milliseconds >= 0")
    if not (_text_map(journal.params) and _text_map(journal.tags)):
        raise BadEntry("params and tags: must map text to text")
    if not isinstance(journal.metrics, list) or not all(map(_point, journal.metrics)):
        raise BadEntry("metrics: must be [key, value, timestamp, step] points")
    if not isinstance(journal.datasets, list) or not all(
        _text_map(dataset) and set(dataset) == DATASET_FIELDS for dataset in journal.datasets
    ):
        raise BadEntry(f"datasets: each must hold text {sorted(DATASET_FIELDS)}")
    _check_artifacts(folder)


def _check_artifacts(folder: Path) -> None:
    artifacts = folder / ARTIFACTS
    if artifacts.is_symlink() or (artifacts.exists() and not artifacts.is_dir()):
        raise BadEntry(f"{ARTIFACTS}: must be a plain folder")
    for parent, folders, files in os.walk(artifacts, followlinks=False):
        for entry in [*folders, *files]:
            path = Path(parent) / entry
            if path.is_symlink():
                raise BadEntry(f"{path.relative_to(folder)}: a symbolic link is never uploaded")
            if not (path.is_dir() or path.is_file()):
                raise BadEntry(f"{path.relative_to(folder)}: not a plain file")


def quarantine(folder: Path, error: BaseException) -> None:
    """Moves an entry aside, whole, to the quarantine folder, saying why in one line."""
    aside = folder.parent / QUARANTINE / folder.name
    copies = 0
    while aside.exists():  # an entry of the same name was moved aside before
        copies += 1
        aside = folder.parent / QUARANTINE / f"{folder.name}-{copies}"
    try:
        aside.parent.mkdir(exist_ok=True)
        os.replace(folder, aside)
        where = f"moved to {aside}"
    except OSError as move_error:
        where = f"left in place ({move_error.strerror})"
    log.warning(
        "Spool entry %s cannot be read (%s: %s); %s, the other entries go on",
        folder.name,
        type(error).__name__,
        str(error).splitlines()[0][:120] if str(error) else "",
        where,
    )


def forget(saved: Saved) -> None:
    """Removes a saved run once the store holds it."""
    shutil.rmtree(saved.folder, ignore_errors=True)
