"""Safe file mechanics: atomic writes (a file is either the old version or the complete new one, never
half-written), inter-process locks, file names built from user or file content that stay inside their
directory, and a writability check that names the directory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ddbench.errors import InvalidOptionError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    # created like any new file (0o666 less the umask; mkstemp would make it private), never reused
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        # a writer may replace the file (safetensors writes it 0600): every file we write gets one mode
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """This process's umask, read without changing it where Linux says it (os.umask sets as it reads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """``text`` as one file name that stays inside its directory: no separators, no ``..``, no leading dot.

    Every file name built from user or file content (a suite's name, a label) goes through here::

        >>> safe_name("../../tmp/x/ESCAPED")
        'tmp_x_ESCAPED'
        >>> safe_name("table1")
        'table1'
    """
    name = _UNSAFE.sub("_", str(text)).strip("._-")
    return name[:120] or fallback


def check_writable_dir(directory: str | os.PathLike[str], what: str) -> Path:
    """Create ``directory`` if needed and prove a file can be written there; else one clear error.

    Root ignores permission bits, so the test is a real file, not ``os.access``.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ddbench-write-test.{uuid.uuid4().hex[:12]}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise InvalidOptionError(
            f"Cannot write to {path} ({describe_os_error(err)}); pass {what} a writable directory"
        ) from None
    return path


def check_dir_could_be_made(directory: str | os.PathLike[str], what: str) -> None:
    """`check_writable_dir` for a plan that writes nothing: ``directory`` exists as a folder or could
    be made (no file where it or a parent folder would go)."""
    path = Path(directory).absolute()
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise InvalidOptionError(f"Cannot use {directory}: {place} is a file; pass {what} a directory")
            return


def describe_os_error(err: OSError) -> str:
    """``read-only file system`` / ``permission denied`` … for one-line messages."""
    names = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
             errno.ENOSPC: "no space left on the device", errno.ENOTDIR: "a path component is a file",
             errno.EEXIST: "a file is in the way"}  # fmt: skip
    return names.get(err.errno or -1, err.strerror or type(err).__name__)


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))

    write_atomic(path, _write)


class FileLock:
    """An exclusive inter-process lock, e.g. a claim on a run or on building a shared cache.

    ``flock`` on ``path``: the kernel drops the lock when its holder exits, however it dies (SIGKILL
    included), so a stale lock never blocks anyone. The file records the holder's host and pid, for
    messages only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock (waiting for it when ``blocking``); False when another process holds it."""
        if fcntl is None:  # no advisory locks on this platform: go on without them
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode())
        self._fd = fd
        return True

    def owner(self) -> str:
        """Who holds the lock, as far as the file says (``host pid N``)."""
        try:
            data = json.loads(self.path.read_text() or "{}")
            return f"{data.get('host', '?')} pid {data.get('pid', '?')}"
        except (OSError, ValueError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
