"""Where a result file's companions live on disk, and how each is written so a kill never half-writes it.

`ResultWriter` (mlbcli.io.writers) owns the protocol; this module owns the files. For an output
``results.parquet`` (a symlinked output means its target, see `follow_symlinks`)::

    results.parquet              the final file, only ever replaced whole (tmp + os.replace)
    results.parquet.parts/       committed batches of the current (or a killed) run, always Parquet
        part-<run>-<pid>-<seq>.parquet
        OVERWRITE                written once an --overwrite run commits rows: older rows are superseded
    .results.parquet.lock        flock target, removed when the run ends (a killed run's stays, harmless)
    results.jsonl.meta.json      schema + metadata sidecar (JSONL/CSV only; Parquet keeps it inside)

Every file here is written under a temporary name, fsync'd and renamed, so it either exists complete or
not at all; the folder is fsync'd after a rename so the rename itself survives a power cut.

This module must not import torch/transformers: it is on the fast start path of the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlbcli.errors import OutputLockedError, UsageError

try:  # POSIX only; elsewhere we run without the cross-process lock (with a warning).
    import fcntl
except ImportError:  # pragma: no cover - not exercised on Linux CI
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PART_RE = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
# Written into the parts folder by an --overwrite run once it commits rows (see read_overwrite_marker).
OVERWRITE_MARKER = "OVERWRITE"


# --------------------------------------------------------------------------------------------- paths


def sibling(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended to its name (``r.parquet`` -> ``r.parquet.parts``)."""
    return path.with_name(path.name + suffix)


def sidecar_path(path: Path) -> Path:
    return sibling(path, ".meta.json")


def parts_dir(path: Path) -> Path:
    return sibling(path, ".parts")


def lock_path(path: Path) -> Path:
    # Hidden: a killed run's lock file stays behind (see OutputLock) and is noise.
    return path.with_name(f".{path.name}.lock")


def part_name(run_id: int, seq: int) -> str:
    """The name of this process's `seq`-th part; names sort by run start, then by commit order."""
    return f"part-{run_id}-{os.getpid()}-{seq:06d}.parquet"


def follow_symlinks(path: Path) -> Path:
    """The file a symlinked output points to (the last component, link after link; may not exist yet).

    Writing through the link keeps it a link (os.replace on the link itself would replace it with a
    regular file), and the parts and the lock live next to the target, so a run on the target and a run
    on the link exclude each other.
    """
    for _ in range(40):  # the kernel's own limit on link chains
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
    raise UsageError(f"output {path} is a symlink loop")


# ---------------------------------------------------------------------------------------- durability


def reason(exc: OSError) -> str:
    """The short cause of an OSError for a one-line message ("No space left on device")."""
    return exc.strerror or str(exc) or type(exc).__name__


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # Makes a rename durable; some filesystems refuse fsync on directories, which is fine to ignore.
    with contextlib.suppress(OSError):
        fsync_path(path)


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` whole: a reader sees the old content or the new, never a mix."""
    tmp = sibling(path, f".tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


# -------------------------------------------------------------------------------------- the output


def make_folder(path: Path) -> None:
    """Create the output's folder; an impossible one (under a regular file...) is a UsageError."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else reason(exc)
        raise UsageError(f"cannot write the output {path}: {why}") from None


def probe_writable(path: Path) -> None:
    """Create and remove a file next to the output, so an unwritable folder fails before any work.

    The lock file alone does not prove it: it may be left over from a run before the folder became
    read-only. (Permission bits are not enough either: ACLs, immutable flags, read-only mounts.)
    """
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644))
        os.unlink(probe)  # also proves renames/removals work there (merge and cleanup need them)
    except OSError as exc:
        raise UsageError(f"cannot write the output {path}: {reason(exc)} in {path.parent}") from None


class OutputLock:
    """An exclusive flock next to the output: a second run on the same file fails before any work.

    flock is advisory, so the holder writes its pid into the file for the other run's message.
    `release()` removes the lock file while still holding the lock, so no live holder ever loses it. A
    process that opened the file just before (and locks it just after) holds a lock on a removed file:
    `acquire()` therefore checks, once locked, that the name still leads to the file it locked, and
    starts again if not. A killed run's lock file stays (the kernel drops the flock) and is reused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            logger.warning("no fcntl on this platform: concurrent runs on %s are not detected", self.path)
            return
        lock = lock_path(self.path)
        for _ in range(100):  # each retry means another run released the lock meanwhile
            fd = self._open(lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(f"another mlb run is writing {self.path} (pid {pid})") from None
            if _same_file(fd, lock):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return
            os.close(fd)  # locked a file its holder removed on release: take the one there now
        raise OutputLockedError(f"another mlb run keeps taking and releasing {self.path}")

    def _open(self, lock: Path) -> int:
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot write the output {self.path}: cannot create {lock} ({reason(exc)})"
            ) from None

    def release(self) -> None:
        """Remove the lock file (while holding it: see the class docstring), then unlock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            lock = lock_path(self.path)
            with contextlib.suppress(OSError):  # a read-only folder: the file stays, harmless
                if _same_file(fd, lock):
                    os.unlink(lock)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` names the file open as `fd` (False when it is gone or was replaced)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


# ---------------------------------------------------------------------------------------- the parts


def part_order(path: Path) -> tuple[int, int, int]:
    """(run id, sequence, pid) of a part: the order in which rows were committed."""
    match = PART_RE.match(path.name)
    assert match is not None
    return int(match.group(1)), int(match.group(3)), int(match.group(2))


def list_parts(folder: Path) -> list[Path]:
    """Committed parts in `folder`, oldest first; a stray file is logged (ours are skipped silently)."""
    if not folder.is_dir():
        return []
    parts = []
    for entry in folder.iterdir():
        if PART_RE.match(entry.name):
            parts.append(entry)
        elif (
            not entry.name.startswith(".")
            and not entry.name.endswith(".corrupt")
            and not entry.name.startswith(OVERWRITE_MARKER)
        ):
            logger.warning("ignoring unexpected file %s in %s", entry.name, folder)
    return sorted(parts, key=part_order)


def read_overwrite_marker(folder: Path) -> int | None:
    """The run id of an interrupted --overwrite run that committed rows, or None."""
    marker = folder / OVERWRITE_MARKER
    if marker.exists():
        with contextlib.suppress(ValueError, OSError):
            return int(marker.read_text().strip())
    return None


def write_overwrite_marker(folder: Path, run_id: int) -> None:
    """From now on a killed --overwrite run must not resurrect the old rows (see read_overwrite_marker)."""
    atomic_write_text(folder / OVERWRITE_MARKER, f"{run_id}\n")
    fsync_dir(folder)


def commit_part(table: pa.Table, final: Path) -> None:
    """Write `table` as the Parquet part `final` atomically; an OSError leaves no half-written file."""
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(final.parent)


def set_aside_corrupt(part: Path) -> None:
    """Rename an unreadable part so it is neither merged nor deleted (kept for inspection)."""
    with contextlib.suppress(OSError):
        os.replace(part, sibling(part, ".corrupt"))


def cleanup(path: Path, parts: Iterable[Path]) -> None:
    """Drop merged `parts` and the temporaries of killed runs next to `path` (safe under the lock)."""
    for part in parts:
        unlink_quietly(part)
    folder = parts_dir(path)
    if folder.is_dir():
        for entry in folder.iterdir():
            ours = entry.name.startswith((OVERWRITE_MARKER, ".part-"))
            if ours and not PART_RE.match(entry.name):
                unlink_quietly(entry)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty (corrupt parts are kept for inspection)
    # Temporaries of killed runs next to the output: the final file's and the sidecar's.
    stale_tmp = re.compile(re.escape(path.name) + r"\.tmp-\d+$")
    side_tmp = sidecar_path(path).name + ".tmp-"
    probe = f".{path.name}.probe-"  # of a run killed inside probe_writable
    for entry in path.parent.iterdir():
        if stale_tmp.match(entry.name) or entry.name.startswith((side_tmp, probe)):
            unlink_quietly(entry)
