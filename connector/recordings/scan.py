"""Looking at files: signatures, sightings, tree walks, and the re-stat that precedes judging.

Everything here blocks (stat, readdir, header reads) and touches no shared state, so the watcher
runs it in worker threads.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from connector.recordings.checks import Decision, RecordingRules, decide, name_problem


@dataclass(frozen=True)
class FileSig:
    """What "unchanged" compares: which file (device, inode), its size and modification time."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    mtime: float  # st_mtime as the outbox stores it: UNIQUE(path, size, mtime)

    @classmethod
    def of(cls, status: os.stat_result) -> FileSig:
        """Take the signature from a stat result."""
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_mtime)


@dataclass(frozen=True)
class Sighting:
    """A regular file with a recording's name, seen under a watch path."""

    found: Path  # the path as seen in the tree (may be a symlink)
    path: Path  # the real file
    sig: FileSig
    inside: bool  # the real file is under one of the watch paths


def is_within(path: Path, roots: Iterable[Path]) -> bool:
    """Whether `path` is one of `roots` or lies below one."""
    return any(path.is_relative_to(root) for root in roots)


def sight_file(found: Path, roots: Sequence[Path]) -> Sighting | None:
    """Resolve and stat one file; None if gone, a dangling or looping link, or not a regular file."""
    try:
        real = found.resolve(strict=True)
        status = real.stat()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on some Python versions
        return None
    if not stat.S_ISREG(status.st_mode):
        return None  # FIFOs, sockets, devices: opening one could block forever
    return Sighting(found, real, FileSig.of(status), is_within(real, roots))


def _sight_entry(entry: os.DirEntry[str], roots: Sequence[Path]) -> Sighting | None:
    """A directory entry as a sighting: a plain file costs one stat, a symlink is resolved."""
    if entry.is_symlink():
        return sight_file(Path(entry.path), roots)
    try:
        status = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    path = Path(entry.path)  # below a real folder and not a link: already the real path
    return Sighting(path, path, FileSig.of(status), is_within(path, roots))


def walk_tree(top: Path, rules: RecordingRules, roots: Sequence[Path], cutoff: float) -> list[Sighting]:
    """Every recording-named file below the real folder `top` modified after `cutoff` (epoch s)."""
    sightings: list[Sighting] = []
    folders = [top]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                entries = list(listing)
        except OSError:
            continue  # vanished or unreadable meanwhile
        for entry in entries:
            # A symlinked folder is not entered (its files could be anywhere); linked files are
            # resolved and checked against the watch paths.
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif name_problem(entry.name, rules) is None:
                sighting = _sight_entry(entry, roots)
                if sighting and sighting.sig.mtime >= cutoff:
                    sightings.append(sighting)
    return sightings


def sight_paths(
    paths: Iterable[Path], rules: RecordingRules, roots: Sequence[Path], cutoff: float
) -> list[Sighting]:
    """Look at changed paths: recording-named files, and folders (walked: moved-in trees)."""
    sightings: list[Sighting] = []
    for path in paths:
        try:
            is_folder = stat.S_ISDIR(path.lstat().st_mode)
            real_folder = path.resolve(strict=True) if is_folder else None
        except (OSError, RuntimeError):
            continue  # deleted: a pending candidate notices when it is re-checked
        if real_folder is not None:
            if is_within(real_folder, roots):
                sightings.extend(walk_tree(real_folder, rules, roots, cutoff))
        elif name_problem(path.name, rules) is None:
            sighting = sight_file(path, roots)
            if sighting and sighting.sig.mtime >= cutoff:
                sightings.append(sighting)
    return sightings


def existing_roots(roots: Sequence[Path]) -> dict[Path, Path]:
    """The watch paths that exist as folders, each with its real path."""
    present: dict[Path, Path] = {}
    for root in roots:
        with contextlib.suppress(OSError, RuntimeError):
            if root.is_dir():
                present[root] = root.resolve(strict=True)
    return present


Judgement = FileSig | Decision | None


def judge(path: Path, sig: FileSig, rules: RecordingRules, now: float) -> Judgement:
    """Re-stat a candidate; decide on it if unchanged. None: gone; a FileSig: it changed."""
    try:
        # lstat: the real path was resolved earlier; a symlink swapped in since is not followed.
        status = path.lstat()
    except OSError:
        return None
    current = FileSig.of(status)
    if not stat.S_ISREG(status.st_mode):
        return None
    if current != sig:
        return current
    try:
        return decide(path, status.st_size, status.st_mtime, rules, now)
    except FileNotFoundError:
        return None


def judge_all(
    due: Sequence[tuple[Path, FileSig]], rules: RecordingRules, now: float
) -> list[tuple[Path, Judgement]]:
    """Judge several candidates in one trip to a worker thread."""
    return [(path, judge(path, sig, rules, now)) for path, sig in due]
