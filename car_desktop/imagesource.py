"""Where a project's images are: a local folder (``LocalImages``) or an object-store prefix
(``RemoteImages``: ``s3://bucket/prefix``, ``gs://bucket/prefix``), behind one small interface.

Both list the image files under their root (relative POSIX paths, sorted; the local one with
``imagefiles.scan_folder``, the remote one with ``pyarrow.fs`` and the same extensions), give a file's
bytes, its header size and SHA-256 (``probe``), and its size and SHA-256 for the failure list
(``fingerprint``). A remote file's size is checked against ``imagefiles.max_file_bytes()`` before a
byte is read, so a huge object is one refused file, never a memory blow-up; transient network errors
are retried a bounded number of times (``RETRIES``).

``canonical_root`` is the form a project stores: a resolved local path, or the URI with its scheme
lower-cased, no trailing slash, and nothing but scheme, bucket and prefix: user:password@ and query
strings (which pyarrow would read keys from) are dropped, so no credential is ever stored. Credentials
come from the environment and the standard AWS / Google Cloud configuration; ``STORAGE_ENV`` names the
variables a Ray run passes on to its workers. pyarrow is imported only for a remote root. No Qt, no torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import imagefiles
from .engine.errors import ImageLoadError
from .errors import CaRDesktopError, first_line

log = logging.getLogger(__name__)

#: URI schemes of object stores, as written by the user -> as stored (``gcs://`` is pyarrow's alias).
SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}
#: Environment variables that tell a storage client where and who it is: passed on to Ray workers.
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
               "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_EC2_METADATA_DISABLED",
               "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")
#: Attempts of one remote call when the error looks transient (network, throttling, 5xx).
RETRIES = 3
_BACKOFF_S = 0.5
#: How long pyarrow's GCS client may retry one request (its own default allows minutes: with no network or no
#: credentials a gs:// batch would look hung).
GCS_RETRY_LIMIT_S = 20
_TRANSIENT = re.compile(r"network|timed? ?out|throttl|slow ?down|connection|temporar|unavailable|"
                        r"internal.?(error|failure)|\b50[0-4]\b|reset by peer|broken pipe", re.IGNORECASE)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
INSTALL_HINT = "reading s3:// and gs:// folders needs pyarrow: pip install 'car-desktop[ray]'"


class SourceError(CaRDesktopError):
    """An image root that cannot be used: an unsupported URI, a bucket that cannot be listed, no pyarrow."""


def is_uri(text: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (an object store, or a URL this tool refuses), False for a local path."""
    return isinstance(text, str) and bool(_URI.match(text))


def canonical_root(text: str | os.PathLike[str]) -> str:
    """The form stored in a project (see the module docstring). SourceError for an unsupported URI."""
    if not is_uri(text):
        return str(Path(text).resolve())
    parts = urlsplit(str(text))
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise SourceError(f"{parts.scheme}:// folders are not supported: give a local folder, "
                          "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    bucket = parts.netloc.rpartition("@")[2]  # never keep user:password@
    if not bucket or "/" in bucket or ":" in bucket:
        raise SourceError(f"{scheme}://{bucket}: a bucket name is needed, e.g. {scheme}://my-bucket/images")
    prefix = posixpath.normpath("/" + parts.path).strip("/")
    return f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")


def under_root(folder: str, root: str) -> str | None:
    """The prefix of ``folder`` (canonical) relative to ``root`` (canonical): "" for the root itself,
    None when ``folder`` is not inside ``root``."""
    if folder == root:
        return ""
    return folder[len(root) + 1:] if folder.startswith(root + "/") else None


@dataclass
class SourceScan:
    """Image files found under a root (relative POSIX paths, sorted) and the places that could not be read."""

    files: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


class ImageSource(Protocol):
    """What the project and the batch ask of an image root."""

    root: str
    remote: bool

    def location(self, rel: str) -> str: ...
    def scan(self, under: str = "", recursive: bool = True) -> SourceScan: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def probe(self, rel: str) -> tuple[imagefiles.ImageSize, str]: ...
    def fingerprint(self, rel: str) -> tuple[int, str | None] | None: ...


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class LocalImages:
    """A local image folder: what the project always had, through the ``ImageSource`` interface."""

    remote = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root)
        self.root = str(self.path)

    def location(self, rel: str) -> str:
        return str(self.path / rel)

    def scan(self, under: str = "", recursive: bool = True) -> SourceScan:
        base = self.path / under if under else self.path
        found = imagefiles.scan_folder(base, recursive=recursive)
        # Relative paths are built without resolving each file, so symlinked images keep their own name.
        return SourceScan([p.relative_to(self.path).as_posix() for p in found.files],
                          [(str(p), why) for p, why in found.unreadable])

    def read_bytes(self, rel: str) -> bytes:
        path = self.path / rel
        imagefiles.check_file(path)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(f"{path}: cannot be read ({exc.strerror or exc}).") from None

    def probe(self, rel: str) -> tuple[imagefiles.ImageSize, str]:
        path = self.path / rel
        return imagefiles.image_size(path), _sha256_file(path)

    def fingerprint(self, rel: str) -> tuple[int, str] | None:
        import stat

        path = self.path / rel
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # never open a pipe
                return None
            return st.st_size, _sha256_file(path)
        except OSError:
            return None


def _pyarrow_fs() -> Any:
    try:
        from pyarrow import fs
    except ImportError:
        raise SourceError(INSTALL_HINT) from None
    return fs


def open_filesystem(root: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, the root's path on it) for a canonical remote root. For S3 an endpoint in
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (MinIO, a test server) is used: pyarrow's from_uri
    does not read it in every version. For GCS an emulator in ``STORAGE_EMULATOR_HOST`` (``host:port``,
    http unless a scheme is given, no credentials) is used, as Google's own client libraries do."""
    fs = _pyarrow_fs()
    scheme, _, path = root.partition("://")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        if scheme == "s3" and endpoint:
            u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            return fs.S3FileSystem(endpoint_override=u.netloc, scheme=u.scheme, region=region), path
        if scheme == "gs":
            limit = timedelta(seconds=GCS_RETRY_LIMIT_S)
            if emulator:
                u = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
                return fs.GcsFileSystem(anonymous=True, endpoint_override=u.netloc, scheme=u.scheme,
                                        retry_time_limit=limit), path
            return fs.GcsFileSystem(retry_time_limit=limit), path   # Google's default credentials
        filesystem, fs_path = fs.FileSystem.from_uri(root)
        return filesystem, fs_path.rstrip("/")
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open {root}: {first_line(exc)} (credentials come from the environment: "
                          "AWS_* variables or ~/.aws, GOOGLE_APPLICATION_CREDENTIALS)") from None


def _transient(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError))
            and bool(_TRANSIENT.search(str(exc))))


def with_retries(call: Any, what: str) -> Any:
    """``call()``, tried again (up to ``RETRIES`` attempts, growing pauses) while it fails transiently."""
    for attempt in range(1, RETRIES + 1):
        try:
            return call()
        except OSError as exc:
            if attempt == RETRIES or not _transient(exc):
                raise
            log.warning("%s failed (%s); trying again (%d/%d)", what, first_line(exc), attempt + 1, RETRIES)
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


class RemoteImages:
    """An object-store prefix read through pyarrow.fs (``filesystem`` and ``path_of`` are what Ray's
    readers take)."""

    remote = True

    def __init__(self, root: str, filesystem: Any = None) -> None:
        self.root = canonical_root(root)
        if not is_uri(self.root):
            raise SourceError(f"{root} is not an s3:// or gs:// folder")
        if filesystem is None:
            self.filesystem, self.base = open_filesystem(self.root)
        else:
            self.filesystem, self.base = filesystem, self.root.partition("://")[2]

    def location(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def check(self) -> None:
        """SourceError unless the root can be read and holds something (one call, before a project is made)."""
        fs = _pyarrow_fs()
        try:
            info = with_retries(lambda: self.filesystem.get_file_info(self.base), f"reading {self.root}")
        except OSError as exc:
            raise SourceError(f"cannot read {self.root}: {first_line(exc)} (check the bucket name and the "
                              "credentials in the environment)") from None
        if info.type == fs.FileType.NotFound:
            raise SourceError(f"{self.root}: nothing there (no such bucket or prefix)")

    def path_of(self, rel: str) -> str:
        """The file's path on ``filesystem`` (bucket/prefix/rel, no scheme)."""
        return f"{self.base}/{rel}"

    def rel_of(self, path: str) -> str | None:
        """Inverse of ``path_of`` (None for a path outside the root)."""
        path = path.partition("://")[2] if is_uri(path) else path
        return under_root(path.strip("/"), self.base)

    def _list(self, under: str, recursive: bool) -> list[Any]:
        fs = _pyarrow_fs()
        base = f"{self.base}/{under}" if under else self.base
        selector = fs.FileSelector(base, recursive=recursive, allow_not_found=True)
        try:
            infos = with_retries(lambda: self.filesystem.get_file_info(selector), f"listing {self.root}")
        except OSError as exc:
            raise SourceError(f"cannot list {self.location(under) if under else self.root}: {first_line(exc)} "
                              "(check the bucket name and the credentials in the environment)") from None
        return [i for i in infos if i.type == fs.FileType.File and imagefiles.is_image_name(i.path)]

    def scan(self, under: str = "", recursive: bool = True) -> SourceScan:
        rels = (self.rel_of(info.path) for info in self._list(under, recursive))
        return SourceScan(sorted(rel for rel in rels if rel))

    def sizes(self) -> dict[str, int]:
        """{rel: size in bytes} of every image file under the root, from one (paginated) listing."""
        out = {}
        for info in self._list("", True):
            rel = self.rel_of(info.path)
            if rel:
                out[rel] = int(info.size or 0)
        return out

    def _size(self, rel: str) -> int:
        fs = _pyarrow_fs()
        where = self.location(rel)
        try:
            info = with_retries(lambda: self.filesystem.get_file_info(self.path_of(rel)), f"reading {where}")
        except OSError as exc:
            raise ImageLoadError(f"{where}: cannot be read ({first_line(exc)}).") from None
        if info.type == fs.FileType.NotFound:
            raise ImageLoadError(f"{where}: no such file.")
        if info.type != fs.FileType.File:
            raise ImageLoadError(f"{where} is not a file, not an image file.")
        return int(info.size or 0)

    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; ImageLoadError (naming the URI) when it is missing, empty, larger than
        ``imagefiles.max_file_bytes()`` (checked before reading) or cannot be read."""
        where = self.location(rel)
        size = self._size(rel)
        if size == 0:
            raise ImageLoadError(f"{where}: the file is empty (0 bytes).")
        limit = imagefiles.max_file_bytes()
        if size > limit:
            raise imagefiles.ImageTooLargeError(imagefiles.too_many_bytes_message(where, size, limit))

        def read() -> bytes:
            with self.filesystem.open_input_stream(self.path_of(rel)) as fh:
                return fh.read(limit + 1)

        try:
            data = with_retries(read, f"reading {where}")
        except OSError as exc:
            raise ImageLoadError(f"{where}: cannot be read ({first_line(exc)}).") from None
        if len(data) > limit:  # it grew since it was measured
            raise imagefiles.ImageTooLargeError(imagefiles.too_many_bytes_message(where, len(data), limit))
        return data

    def probe(self, rel: str) -> tuple[imagefiles.ImageSize, str]:
        data = self.read_bytes(rel)
        return imagefiles.image_size(self.location(rel), data=data), hashlib.sha256(data).hexdigest()

    def fingerprint(self, rel: str) -> tuple[int, str | None] | None:
        """(size, SHA-256) of the file; the hash is None for a file that is not read (empty, too large,
        unreadable); None when it is not there."""
        try:
            size = self._size(rel)
        except ImageLoadError:
            return None
        if size == 0 or size > imagefiles.max_file_bytes():
            return size, None
        try:
            data = self.read_bytes(rel)
        except ImageLoadError:
            return size, None
        return len(data), hashlib.sha256(data).hexdigest()


def open_source(root: str | os.PathLike[str]) -> LocalImages | RemoteImages:
    """The image source of a root as a project stores it (a local path or a canonical URI)."""
    return RemoteImages(str(root)) if is_uri(root) else LocalImages(root)
