"""Content digests of the files a run reads: dataset files and model weights.

A run id must change when the data or the model behind it changes, and must not change when the
same files are moved. So files are identified by their content (SHA-256 of their bytes) and their
path *relative* to the directory they belong to, never by an absolute path. Hashing is cached per
file by (absolute path, size, modification time) in ``$DDBENCH_CACHE/file-digests.json`` (default
``~/.cache/ddbench``), so a gigabyte checkpoint is read once, not on every run.

Dataset plugins use `files_digest` (or `listing_digest` for image trees too big to read on every
run) in their ``fingerprint`` hook; the core uses `path_digest` for a plugin's ``path_options``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

#: suffixes of model weights and their configuration, hashed by `path_digest` in a model directory
MODEL_SUFFIXES = frozenset({
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".npz", ".npy", ".h5", ".msgpack", ".onnx",
    ".json", ".yaml", ".yml", ".toml", ".cfg",
})  # fmt: skip
#: files at least this big have their digest cached on disk; smaller ones are cheaper to read again
CACHE_MIN_BYTES = 2**20
_CACHE_NAME = "file-digests.json"
_lock = threading.Lock()
_memory: dict[str, str] = {}


def _cache_file() -> Path:
    value = os.environ.get("DDBENCH_CACHE")
    return (Path(value).expanduser() if value else Path.home() / ".cache" / "ddbench") / _CACHE_NAME


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(entries: dict[str, str]) -> None:
    from ddbench.util.fileio import write_json_atomic

    try:
        write_json_atomic(_cache_file(), {**_load_cache(), **entries})
    except OSError:
        pass  # a cache that cannot be written costs time, never correctness


def _sha256_many(paths: Sequence[Path]) -> list[str]:
    """Hex SHA-256 of each file's bytes, cached by (absolute path, size, mtime); new digests are
    written to the cache file once per call."""
    found: list[str] = []
    new: dict[str, str] = {}
    with _lock:
        if not _memory:
            _memory.update(_load_cache())
    for path in paths:
        resolved = path.resolve()
        stat = resolved.stat()
        key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
        value = _memory.get(key)
        if value is None:
            digest = hashlib.sha256()
            with open(resolved, "rb") as handle:
                for block in iter(lambda: handle.read(2**20), b""):
                    digest.update(block)
            value = digest.hexdigest()
            if stat.st_size >= CACHE_MIN_BYTES:
                new[key] = value
        found.append(value)
    if new:
        with _lock:
            _memory.update(new)
        _save_cache(new)
    return found


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, cached by (absolute path, size, mtime)."""
    return _sha256_many([Path(path)])[0]


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def _digest(lines: Iterable[str], kind: str) -> str:
    digest = hashlib.sha256(kind.encode())
    for line in lines:
        digest.update(line.encode() + b"\n")
    return f"{kind}:{digest.hexdigest()[:32]}"


def files_digest(
    files: Sequence[str | os.PathLike[str]], base: str | os.PathLike[str], max_bytes: int | None = None
) -> str:
    """One digest of ``files``: their paths relative to ``base`` and their bytes (``sha256:…``).

    With ``max_bytes``, file sets bigger than that in total get `listing_digest` instead, so an
    image tree of any size stays cheap to identify on every run.
    """
    paths = sorted((Path(f) for f in files), key=lambda p: _relative(p, Path(base)))
    if max_bytes is not None and sum(p.stat().st_size for p in paths) > max_bytes:
        return listing_digest(paths, base)
    names = [_relative(p, Path(base)) for p in paths]
    return _digest((f"{n} {h}" for n, h in zip(names, _sha256_many(paths))), "sha256")


def listing_digest(files: Sequence[str | os.PathLike[str]], base: str | os.PathLike[str]) -> str:
    """One digest of the paths of ``files`` relative to ``base`` and their sizes (``listing:…``):
    for image trees too big to read on every run (a changed image of the same size goes unseen)."""
    entries = sorted(f"{_relative(Path(f), Path(base))} {Path(f).stat().st_size}" for f in files)
    return _digest(entries, "listing")


def path_digest(path: str | os.PathLike[str]) -> str:
    """The content digest of a model file, or of the weight and config files in a model directory
    (`MODEL_SUFFIXES`, hidden files skipped). Moving the file or directory keeps the digest."""
    root = Path(path).expanduser()
    if root.is_file():
        return f"sha256:{file_sha256(root)}"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist")
    files = [
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]  # fmt: skip
    files.sort()
    return _digest((f"{p.relative_to(root).as_posix()} {h}" for p, h in zip(files, _sha256_many(files))), "sha256")


__all__ = ["file_sha256", "files_digest", "listing_digest", "path_digest", "MODEL_SUFFIXES"]
