"""Results a job could not write to its store, kept on disk until a store takes them.

A job records everything it logs (params, tags, every metric point, its text
artifacts, figures and files) in a `Journal` as it goes. When the store stops
taking writes (a call fails past `tracking.deadline_seconds`, or the store
refuses it), the job carries on offline and, when it ends, saves the journal in
the spool folder (`tracking.spool_dir`, by default `unsent/` in the folder the
command runs from): one folder per run with `run.json` and `artifacts/`, built in a
hidden staging folder and renamed into place when complete, so a partial entry
never appears. An entry that cannot be read is moved aside, whole, to
`quarantine/` in the spool folder, and the others are recorded.

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

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
ARTIFACTS = "artifacts"  # the run's artifact files, laid out as in the store
# Entries that could not be read, moved here (never deleted) for a person to look at.
QUARANTINE = "quarantine"


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
    for run_file in sorted(Path(root).glob(f"*/{RUN_FILE}")):
        try:
            record = json.loads(run_file.read_text())
            record["metrics"] = [tuple(point) for point in record["metrics"]]
            saved.append(Saved(run_file.parent, Journal(**record)))
        except (OSError, ValueError, TypeError, KeyError) as error:
            _quarantine(run_file.parent, error)
    return sorted(saved, key=lambda entry: entry.journal.start_time)


def _quarantine(folder: Path, error: BaseException) -> None:
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
