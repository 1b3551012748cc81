"""Folders in Django's storage: what its file API lacks, written once for every app.

Every dataset, checkpoint and training result is stored through ``default_storage`` (the local
filesystem under ``MEDIA_ROOT`` by default, an S3-compatible bucket with ``STORAGE_BACKEND=s3``),
under a *storage name* such as ``jobs/<owner>/<task>/final``. A folder is every file under that
prefix. The functions here upload a local folder, fetch one atomically, delete one, list one, open a
file as a stream, and give a local folder to code that needs a path (``transformers``, ``peft``,
an inference server): on the filesystem the storage's own folder, elsewhere a per-machine cache.

A name may also be an absolute path: rows written before storage existed, and folders an operator
points a model at, hold one. Such a name is a plain local folder on the machine that reads it (this
resolver accepts both kinds, so no data migration rewrites old rows).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, default_storage

CHUNK = 1024 * 1024


class StorageError(OSError):
    """A stored folder or file that is missing or cannot be read; the message names it and says why."""


@dataclass(frozen=True)
class StoredFile:
    relative: str  # path inside the folder, with "/"
    name: str  # the file's own storage name
    size: int

    @property
    def basename(self) -> str:
        return PurePosixPath(self.relative).name


def _resolve(name: str) -> tuple[Storage, str]:
    """(storage, key) for a storage name or an absolute local path."""
    name = str(name).strip()
    if not name:
        raise StorageError("an empty storage name")
    if os.path.isabs(name):
        return FileSystemStorage(location="/"), name.lstrip("/")
    return default_storage, name.strip("/")


def _local_path(store: Storage, key: str) -> Path | None:
    """Where the key lives on this machine's disk, when the storage is a local filesystem."""
    try:
        return Path(store.path(key))
    except NotImplementedError:
        return None


def is_local(name: str = "x") -> bool:
    """True when ``name`` is stored on this machine's filesystem (no copy is needed to read it)."""
    store, key = _resolve(name)
    return _local_path(store, key) is not None


def _s3(store: Storage):
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # django-storages not installed: no S3 here
        return None
    return store if isinstance(store, S3Storage) else None


def list_folder(name: str) -> list[StoredFile]:
    """Every file under the folder ``name`` (recursively), sorted; [] when there is none."""
    store, key = _resolve(name)
    local = _local_path(store, key)
    if local is not None:
        if not local.is_dir():
            return []
        files = [p for p in local.rglob("*") if p.is_file()]
        return sorted(
            (
                StoredFile(
                    p.relative_to(local).as_posix(),
                    f"{name.rstrip('/')}/{p.relative_to(local).as_posix()}",
                    p.stat().st_size,
                )
                for p in files
            ),
            key=lambda f: f.relative,
        )
    s3 = _s3(store)
    if s3 is not None:  # one paged listing with sizes, instead of a request per file
        prefix = s3._normalize_name(key) + "/"
        found = [
            StoredFile(obj.key[len(prefix) :], f"{name.rstrip('/')}/{obj.key[len(prefix) :]}", obj.size)
            for obj in s3.bucket.objects.filter(Prefix=prefix)
            if not obj.key.endswith("/")
        ]
        return sorted(found, key=lambda f: f.relative)
    found = []

    def walk(rel: str) -> None:
        dirs, files = store.listdir(f"{key}/{rel}".rstrip("/"))
        for file in files:
            relative = f"{rel}{file}"
            found.append(StoredFile(relative, f"{name.rstrip('/')}/{relative}", store.size(f"{key}/{relative}")))
        for folder in dirs:
            walk(f"{rel}{folder}/")

    walk("")
    return sorted(found, key=lambda f: f.relative)


def folder_exists(name: str) -> bool:
    return bool(list_folder(name))


def upload_folder(local_dir: Path | str, name: str, *, move: bool = False) -> str:
    """Store every file under ``local_dir`` as the folder ``name``, replacing what was there; return ``name``.

    Files are written first and stale ones removed after, so a reader never sees the folder empty. With
    ``move`` the local folder is not needed afterwards: on a filesystem storage on the same disk it is
    renamed into place (no copy: a full fine-tune's checkpoint is gigabytes)."""
    local_dir = Path(local_dir)
    store, key = _resolve(name)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    if not files:
        raise StorageError(f"{local_dir} has no files to store as {name}")
    target = _local_path(store, key)
    if move and target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.incoming")
        shutil.rmtree(staged, ignore_errors=True)
        try:
            os.rename(local_dir, staged)
        except OSError:  # another disk: copied below
            pass
        else:
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.rename(target, old)
            os.rename(staged, target)
            shutil.rmtree(old, ignore_errors=True)
            return name
    before = {f.relative for f in list_folder(name)}
    for path in files:
        relative = path.relative_to(local_dir).as_posix()
        target = f"{key}/{relative}"
        if relative in before:
            store.delete(target)  # the filesystem storage would otherwise pick another name
        with path.open("rb") as fh:
            saved = store.save(target, File(fh, name=path.name))
        if saved != target:
            raise StorageError(f"{name}: {relative} was stored as {saved}, not at its own name")
    for stale in before - {p.relative_to(local_dir).as_posix() for p in files}:
        store.delete(f"{key}/{stale}")
    return name


def fetch_folder(name: str, local_dir: Path | str) -> Path:
    """Copy the folder ``name`` to ``local_dir`` atomically (into a temp folder, then renamed into place)."""
    local_dir = Path(local_dir)
    store, key = _resolve(name)
    try:
        files = list_folder(name)
    except Exception as exc:
        raise StorageError(f"{name} cannot be listed: {type(exc).__name__}: {exc}") from exc
    if not files:
        raise StorageError(f"{name} has no files in the storage")
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}-", dir=local_dir.parent))
    try:
        for file in files:
            target = tmp / file.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open_stream(file.name) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
            except StorageError:
                raise
            except Exception as exc:
                raise StorageError(f"{name}/{file.relative} cannot be read: {type(exc).__name__}: {exc}") from exc
        shutil.rmtree(local_dir, ignore_errors=True)
        tmp.rename(local_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local_dir


def delete_folder(name: str) -> None:
    """Remove every file under ``name`` (nothing there is fine)."""
    store, key = _resolve(name)
    local = _local_path(store, key)
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)
        return
    for file in list_folder(name):
        store.delete(f"{key}/{file.relative}")


def delete_file(name: str) -> None:
    store, key = _resolve(name)
    store.delete(key)


def save_file(local_path: Path | str, name: str) -> str:
    """Store one local file at ``name`` exactly, replacing what was there; return the name."""
    store, key = _resolve(name)
    store.delete(key)
    with open(local_path, "rb") as fh:
        saved = store.save(key, File(fh, name=PurePosixPath(key).name))
    return saved


class _ObjectReader(io.RawIOBase):
    """A raw stream over an S3 object's response body, for io.BufferedReader. Seeking asks for the object
    again from that byte on (a ranged GET), so a reader that peeks at the head and rewinds reads no more."""

    def __init__(self, obj) -> None:
        self.obj, self.pos, self.body = obj, 0, None
        self.size = obj.content_length  # a HEAD: also raises at once if the object is missing

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        position = max(0, base + offset)
        if position != self.pos:
            self._close_body()
            self.pos = position
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.size:
            return 0
        if self.body is None:
            self.body = self.obj.get(Range=f"bytes={self.pos}-")["Body"]
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _close_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        self._close_body()
        super().close()


def open_stream(name: str) -> IO[bytes]:
    """The stored file ``name`` opened for reading as a buffered stream (``read``, ``readline``), never read
    whole into memory or onto disk first. A missing or unreadable file raises StorageError."""
    store, key = _resolve(name)
    local = _local_path(store, key)
    if local is not None:
        try:
            return open(local, "rb", buffering=CHUNK)  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise StorageError(f"{name} cannot be read: {exc.strerror or exc}") from exc
    s3 = _s3(store)
    try:
        if s3 is not None:  # S3File downloads the whole object before the first read; the body streams
            return io.BufferedReader(_ObjectReader(s3.bucket.Object(s3._normalize_name(key))), buffer_size=CHUNK)
        return store.open(key, "rb")
    except Exception as exc:
        raise StorageError(f"{name} cannot be read: {type(exc).__name__}: {exc}") from exc


# --- local folders for code that needs a path -------------------------------------------------


def _cache_dir(name: str) -> Path:
    return Path(settings.VAR_DIR) / "cache" / "storage" / name.strip("/")


def local_path(name: str) -> Path:
    """Where ``local_folder(name)`` is (or will be) on this machine, without fetching anything."""
    store, key = _resolve(name)
    return _local_path(store, key) or _cache_dir(key)


def local_folder(name: str) -> Path:
    """A local folder holding the folder ``name``: the storage's own on the filesystem (no copy), else a copy
    in this machine's cache under ``CONSOLE_VAR_DIR/cache/storage/``, fetched once under a lock.

    Only for folders that never change once stored (results); a missing folder raises StorageError."""
    store, key = _resolve(name)
    local = _local_path(store, key)
    if local is not None:
        if not local.is_dir() or not any(local.iterdir()):
            raise StorageError(f"{name} has no files in the storage")
        return local
    cached = _cache_dir(key)
    if cached.is_dir():  # a fetch renames the complete folder into place: present means complete
        return cached
    locks = Path(settings.VAR_DIR) / "cache" / "storage-locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.is_dir():  # another process fetched it meanwhile
            fetch_folder(name, cached)
    return cached


def forget_local(name: str) -> None:
    """Drop this machine's cached copy of ``name`` (the stored folder itself is untouched)."""
    store, key = _resolve(name)
    if _local_path(store, key) is None:
        shutil.rmtree(_cache_dir(key), ignore_errors=True)


class _Pipe:
    """A write-only file that zipfile writes into, read out in chunks as the response streams."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        if data:
            self.chunks.append(bytes(data))
            self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


DEFLATED_SUFFIXES = {".json", ".jinja", ".txt", ".model", ".md"}


def zip_stream(
    folder_name: str,
    files: Iterable[StoredFile],
    *,
    stamp: datetime,
    rewrite: dict[str, Callable[[bytes], bytes]] | None = None,
) -> Iterator[bytes]:
    """Stream stored files as a zip, each under ``folder_name/``, without a temp file (a response streams it).

    Weights are stored as they are (they do not compress), text files deflated; ``rewrite`` maps a file's
    basename to a function that returns what the zip holds instead of its bytes."""
    rewrite = rewrite or {}
    pipe = _Pipe()
    date_time = stamp.timetuple()[:6]
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file in files:
            arcname = f"{folder_name}/{file.relative}"
            if file.basename in rewrite:
                with open_stream(file.name) as source:
                    archive.writestr(arcname, rewrite[file.basename](source.read()))
            else:
                info = zipfile.ZipInfo(arcname, date_time=date_time)
                info.external_attr = 0o644 << 16
                info.file_size = file.size
                deflate = PurePosixPath(file.basename).suffix in DEFLATED_SUFFIXES
                info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                with open_stream(file.name) as source, archive.open(info, "w", force_zip64=True) as target:
                    while block := source.read(CHUNK):
                        target.write(block)
                        if pipe.chunks:
                            yield pipe.take()
            if data := pipe.take():
                yield data
    if data := pipe.take():
        yield data
