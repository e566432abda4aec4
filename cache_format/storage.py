"""Where a cache lives: a local path, or any fsspec URL (s3://, gs://, hf://, memory://, ...).

`as_path(location)` gives a `pathlib.Path` for a local path or a `file://` URL, and a
`RemotePath` for every other URL. RemotePath offers the few `pathlib` methods the readers use
(`/`, `name`, `parent`, `is_file`, `is_dir`, `exists`, `is_symlink`, `resolve`,
`is_relative_to`, `stat().st_size`, `open`, `iterdir`), so the manifest, shard and addition
checks run unchanged on shared storage: the same untrusted-input checks, one code path.
`open_h5(path)` opens an HDF5 file read-only with h5py and without HDF5 file locking (a cache is
immutable once its manifest is written, and shared filesystems often answer `flock` with
ENOLCK), through a buffered file object for URLs. Shards of a cache are not opened this way but
through cache_format/sandbox.py, which checks their bytes in a child process first (a remote
shard is then copied whole to a private temporary file: the bytes checked are the bytes read).

A RemotePath has no `__fspath__` on purpose: code that would hand it to the builtin `open` fails
loudly instead of reading a local file of the same name. Errors of the storage (no network, no
credentials, a protocol whose package is missing) become a CacheError naming the URL.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py

from .schema import CacheError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
BLOCK_SIZE = 1 << 21  # bytes fetched per read of a remote shard (HDF5 chunks are ~256 KiB)


def is_url(location) -> bool:
    """True for "proto://..." strings (also chained "simplecache::s3://...")."""
    return isinstance(location, str) and bool(_URL.match(location))


@dataclass(frozen=True)
class _Stat:
    st_size: int


class RemotePath:
    """A file or directory on an fsspec filesystem, with the pathlib methods readers use.

    Args:
        url: "proto://path" (any protocol fsspec knows).
    """

    def __init__(self, url: str, _fs=None, _path: str | None = None):
        if _fs is None:
            try:
                import fsspec
            except ImportError:
                raise CacheError(f"{url}: reading a cache from a URL needs fsspec: pip install "
                                 f"fsspec (the 'remote' extra)") from None
            try:
                _fs, _path = fsspec.core.url_to_fs(url)
            except (ImportError, ValueError) as err:
                raise CacheError(f"cannot open {url}: {err}") from None
        self.fs = _fs
        self.path = posixpath.normpath(_path) if _path else "/"
        self.url = self.fs.unstrip_protocol(self.path) if url is None else url

    def _child(self, path: str) -> RemotePath:
        return RemotePath(None, self.fs, path)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except (OSError, PermissionError, ValueError, RuntimeError, TimeoutError) as err:
            raise CacheError(f"{self}: {what} failed ({type(err).__name__}: {err}); check the "
                             f"URL, the network and the credentials") from err

    # -- pathlib-like -------------------------------------------------------------------------
    def __truediv__(self, other) -> RemotePath:
        return self._child(posixpath.join(self.path, str(other)))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and (self.fs, self.path) == (other.fs, other.path)

    def __hash__(self) -> int:
        return hash((type(self.fs).__name__, self.path))

    def __reduce__(self):
        return (RemotePath, (self.url,))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> RemotePath:
        return self._child(posixpath.dirname(self.path) or "/")

    def resolve(self) -> RemotePath:
        """Object stores have no links: the normalised path."""
        return self

    def is_relative_to(self, other: RemotePath) -> bool:
        if not isinstance(other, RemotePath) or type(other.fs) is not type(self.fs):
            return False
        root = other.path.rstrip("/") + "/"
        return self.path == other.path or self.path.startswith(root)

    def exists(self) -> bool:
        return bool(self._call("exists", self.fs.exists, self.path))

    def is_dir(self) -> bool:
        return bool(self._call("isdir", self.fs.isdir, self.path))

    def is_file(self) -> bool:
        return bool(self._call("isfile", self.fs.isfile, self.path))

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> _Stat:
        info = self._call("stat", self.fs.info, self.path)
        return _Stat(int(info.get("size") or 0))

    def iterdir(self):
        for p in self._call("list", self.fs.ls, self.path, detail=False):
            yield self._child(p)

    def open(self, mode: str = "r", encoding: str | None = None, **kwargs):
        if any(c in mode for c in "wax+"):
            raise CacheError(f"{self}: remote caches are read-only here")
        binary = "b" in mode
        f = self._call("open", self.fs.open, self.path, "rb", block_size=BLOCK_SIZE,
                       cache_type="readahead")
        if binary:
            return f
        import io

        return io.TextIOWrapper(f, encoding=encoding or "utf-8")


def as_path(location) -> Path | RemotePath:
    """A Path for local paths and file:// URLs, a RemotePath for every other URL."""
    if isinstance(location, Path | RemotePath):
        return location
    location = str(location)
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    if is_url(location):
        return RemotePath(location)
    return Path(location)


def is_remote(path) -> bool:
    return isinstance(path, RemotePath)


def open_h5(path: Path | RemotePath | str) -> h5py.File:
    """Open an HDF5 file read-only, without file locking (OSError when it is not readable HDF5,
    as h5py raises)."""
    if isinstance(path, RemotePath):
        fileobj = path.open("rb")
        try:
            return h5py.File(fileobj, "r", locking=False)
        except Exception:
            fileobj.close()
            raise
    return h5py.File(path, "r", locking=False)


def local_only(location, what: str) -> Path:
    """The local Path of `location`; a CacheError for URLs (`what` needs a local cache)."""
    path = as_path(location)
    if isinstance(path, RemotePath):
        raise CacheError(f"{what} needs a local cache; {path} is remote: copy it first (e.g. "
                         f"`fsspec` / `aws s3 sync`) or write to a local directory")
    return path
