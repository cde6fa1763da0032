"""Fetching one weights file over HTTP(S) safely: resumable, verifiable, cancellable, fast to fail.

``download_file`` streams into ``<dest>.part``, resumes a partial ``.part`` with an HTTP Range request
(and starts over when the server ignores Range), checks size and SHA-256, and renames onto ``dest``
only when the file is right, so a truncated or corrupt file never sits where a model is loaded from.
An unreachable host is reported within a few seconds, with a message naming the file, its URL and the
folder where a manually downloaded copy will be picked up. Three limits bound the time a download
can take: silence (no byte for ``timeout`` seconds: the connection is retried, resuming), a stall
(fewer than ``stall_min_bytes`` in any ``stall_timeout`` seconds: a server trickling a byte now and
then fails within seconds, not never) and an overall ``deadline``. Plain ``http.client``: no extra
dependency, and full control over connect and read timeouts. Never Qt.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from ..fileio import commit_file
from .cancel import CancelToken
from .errors import Cancelled, WeightsCorruptError, WeightsMissingError

log = logging.getLogger(__name__)

#: ``progress(done_bytes, total_bytes_or_None)``.
ProgressCallback = Callable[[int, "int | None"], None]

DEFAULT_CONNECT_TIMEOUT = 4.0  # DNS + TCP (+TLS) together: keeps "offline" answers under 5 s
DEFAULT_READ_TIMEOUT = 15.0  # silence on an open connection before the connection is retried
DEFAULT_STALL_TIMEOUT = 15.0  # window over which the transfer must move at least STALL_MIN_BYTES
STALL_MIN_BYTES = 16 * 1024  # about 1 KB/s: slower than that, a model download would take days
DEFAULT_DEADLINE = 6 * 3600.0  # the whole download, retries included (vit_h is 2.5 GB)
CHUNK_SIZE = 1 << 20
MAX_REDIRECTS = 8
_USER_AGENT = "car-desktop-model-manager"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DownloadResult:
    """A finished, verified download."""

    path: Path
    size: int
    sha256: str
    resumed_from: int  # bytes already in the .part file when the successful attempt started


class _Interrupted(Exception):
    """The transfer broke off; the .part file is kept for a resume."""


class _Restart(Exception):
    """The .part file cannot be resumed from; it was removed, start again from byte 0."""


class _TooSlow(Exception):
    """The transfer is too slow to finish (stalled, or past the deadline); not retried."""


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_reason(hf: bool = False) -> str | None:
    """Why downloads are switched off by the environment, or None when they are allowed."""
    if env_flag("CAR_DESKTOP_NO_DOWNLOAD"):
        return "downloads are switched off (CAR_DESKTOP_NO_DOWNLOAD=1)"
    if hf and (env_flag("HF_HUB_OFFLINE") or env_flag("TRANSFORMERS_OFFLINE")):
        return "the Hugging Face hub is switched off (HF_HUB_OFFLINE=1)"
    return None


def missing_message(filename: str, url: str, folder: Path | str, reason: str) -> str:
    """The one message for weights that are not here and cannot be fetched now."""
    return (
        f"The model file {filename} is not on this computer and cannot be downloaded now: {reason}. "
        f"Download it from {url} and put it in {folder} (it is picked up from there), "
        f"or point CaR Desktop at a local copy with 'car-desktop models use NAME FILE'."
    )


def partial_path(dest: Path | str) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path | str, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> str:
    """SHA-256 of a file, read in chunks (reports progress, honours cancel)."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            if cancel is not None:
                cancel.check()
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a time limit (the C call itself has none; offline DNS can hang for long)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dns")
    try:
        future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise OSError(f"looking up {host} took longer than {timeout:.0f} s") from exc
    finally:
        pool.shutdown(wait=False)


def _open_socket(host: str, port: int, use_tls: bool, connect_timeout: float) -> socket.socket:
    deadline = time.monotonic() + connect_timeout
    infos = _resolve(host, port, connect_timeout)
    last: OSError | None = None
    for family, type_, proto, _canon, sockaddr in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, type_, proto)
        sock.settimeout(max(remaining, 0.2))
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        if use_tls:
            context = ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except OSError as exc:
                sock.close()
                last = exc
                continue
        return sock
    if last is None:
        raise OSError(f"connecting to {host}:{port} took longer than {connect_timeout:.0f} s")
    raise last


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "its name cannot be looked up (no network?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def probe_host(url: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> str | None:
    """None when a TCP connection to the URL's host opens within ``timeout``; else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        sock = _open_socket(parts.hostname or "", port, False, timeout)
    except OSError as exc:
        return f"{parts.hostname} is unreachable ({_describe(exc)})"
    sock.close()
    return None


def _request(url: str, headers: dict[str, str], connect_timeout: float, read_timeout: float
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
    """GET ``url`` following redirects; returns the connection, the response and the final URL."""
    for _ in range(MAX_REDIRECTS):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OSError(f"unsupported URL scheme {parts.scheme!r}")
        use_tls = parts.scheme == "https"
        port = parts.port or (443 if use_tls else 80)
        host = parts.hostname or ""
        sock = _open_socket(host, port, use_tls, connect_timeout)
        sock.settimeout(read_timeout)
        conn_cls = http.client.HTTPSConnection if use_tls else http.client.HTTPConnection
        conn = conn_cls(host, port, timeout=read_timeout)
        conn.sock = sock  # already connected (with our time limits)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            url = urljoin(url, resp.getheader("Location"))
            conn.close()
            continue
        return conn, resp, url
    raise OSError("too many redirects")


class _CancelWatch:
    """Shuts the socket down when the token is cancelled, so a blocked read returns at once."""

    def __init__(self, cancel: CancelToken | None, sock: socket.socket | None) -> None:
        self._cancel, self._sock = cancel, sock
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _CancelWatch:
        if self._cancel is not None and self._sock is not None:
            self._thread = threading.Thread(target=self._run, name="download-cancel", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(0.05):
            if self._cancel is not None and self._cancel.cancelled:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                return

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    """Parse ``bytes START-END/TOTAL`` into (START, TOTAL or None)."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, total = value[6:].split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except ValueError:
        return None


def _attempt(url: str, part: Path, *, expected_size: int | None, progress: ProgressCallback | None,
             cancel: CancelToken | None, connect_timeout: float, read_timeout: float,
             chunk_size: int, stall_timeout: float = DEFAULT_STALL_TIMEOUT,
             stall_min_bytes: int = STALL_MIN_BYTES, deadline: float | None = None) -> tuple[int, int]:
    """One connection's worth of transfer into ``part``. Returns (bytes in part, resumed_from).
    ``deadline`` is a ``time.monotonic()`` value."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        log.warning("%s is longer than the expected %d bytes; starting over", part, expected_size)
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size and offset > 0:
        return offset, offset  # already complete from an earlier attempt: only verification is left

    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    read_timeout = min(read_timeout, stall_timeout)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TooSlow("the download took longer than its deadline")
        connect_timeout = min(connect_timeout, left)
    conn, resp, _final = _request(url, headers, connect_timeout, read_timeout)
    try:
        if resp.status == 416 and offset:
            part.unlink(missing_ok=True)
            raise _Restart(f"the server cannot resume from byte {offset}")
        if resp.status == 206 and offset:
            parsed = _content_range_start(resp.getheader("Content-Range"))
            if parsed is None or parsed[0] != offset:
                part.unlink(missing_ok=True)
                raise _Restart(f"the server resumed at the wrong place ({resp.getheader('Content-Range')})")
            mode = "ab"
        elif resp.status == 200:
            if offset:
                log.info("server ignored the Range request for %s; downloading from the start", url)
            offset, mode = 0, "wb"
        else:
            raise WeightsMissingError(f"HTTP {resp.status} {resp.reason}")

        length = resp.getheader("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise WeightsCorruptError(
                f"the server offers {total} bytes but {expected_size} are expected: the file at "
                f"{url} is not the one this version of CaR Desktop knows"
            )
        total = total if total is not None else expected_size
        resumed_from = offset
        done = offset
        last_report = 0.0
        if progress is not None:
            progress(done, total)
        window_start, window_bytes = time.monotonic(), 0
        with _CancelWatch(cancel, conn.sock), part.open(mode) as out:
            while True:
                if cancel is not None:
                    cancel.check()
                try:
                    chunk = resp.read1(chunk_size)
                except TimeoutError as exc:
                    raise _Interrupted(f"no data for {read_timeout:.0f} s") from exc
                except (OSError, http.client.HTTPException) as exc:
                    if cancel is not None:
                        cancel.check()
                    raise _Interrupted(_describe(exc)) from exc
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                window_bytes += len(chunk)
                if deadline is not None and now > deadline:
                    raise _TooSlow("the download took longer than its deadline")
                if now - window_start >= stall_timeout:
                    if window_bytes < stall_min_bytes:
                        raise _TooSlow(f"the server sent only {window_bytes} bytes in {now - window_start:.0f} s; "
                                       "it is stalled or far too slow")
                    window_start, window_bytes = now, 0
                if progress is not None and (now - last_report >= 0.05 or done == total):
                    progress(done, total)
                    last_report = now
            out.flush()
            os.fsync(out.fileno())
        if cancel is not None:
            cancel.check()
        if progress is not None:
            progress(done, total)
        if total is not None and done < total:
            raise _Interrupted(f"the connection closed after {done} of {total} bytes")
        return done, resumed_from
    finally:
        conn.close()


def download_file(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    expected_size: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    timeout: float = DEFAULT_READ_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    retries: int = 0,
    pickup_folder: Path | str | None = None,
    chunk_size: int = CHUNK_SIZE,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    stall_min_bytes: int = STALL_MIN_BYTES,
    deadline: float | None = DEFAULT_DEADLINE,
) -> DownloadResult:
    """Download ``url`` to ``dest`` through ``dest.part``; verify; rename only when right.

    - A ``.part`` left by an interrupted run is resumed with a Range request; a server that ignores
      Range gets a fresh download. ``retries`` extra attempts are made after a dropped connection.
    - Size (``expected_size``) and hash (``sha256``, or ``sha256_prefix`` when only a prefix is known)
      are checked before the rename; a mismatch deletes the ``.part`` and raises WeightsCorruptError.
    - ``cancel`` raises Cancelled; ``dest`` is untouched and the ``.part`` stays for a later resume.
    - Unreachable host, refused connection, HTTP error, a transfer that breaks off, stalls (fewer than
      ``stall_min_bytes`` in ``stall_timeout`` seconds) or outlasts ``deadline`` seconds (None: no
      limit): WeightsMissingError naming the file, the URL and ``pickup_folder`` (default: ``dest``'s
      folder); the ``.part`` is kept for a resume.
    """
    dest = Path(dest)
    ends_at = None if deadline is None else time.monotonic() + deadline
    part = partial_path(dest)
    folder = Path(pickup_folder) if pickup_folder is not None else dest.parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts = restarts = 0
    while True:
        if cancel is not None:
            cancel.check()
        try:
            size, resumed_from = _attempt(
                url, part, expected_size=expected_size, progress=progress, cancel=cancel,
                connect_timeout=connect_timeout, read_timeout=timeout, chunk_size=chunk_size,
                stall_timeout=stall_timeout, stall_min_bytes=stall_min_bytes, deadline=ends_at,
            )
            break
        except _TooSlow as exc:
            kept = part.stat().st_size if part.exists() else 0
            raise WeightsMissingError(missing_message(
                dest.name, url, folder,
                f"{exc} ({kept} bytes are kept and the next try resumes there)",
            )) from exc
        except _Restart as exc:
            restarts += 1
            if restarts > 2:
                raise WeightsMissingError(missing_message(dest.name, url, folder, str(exc))) from exc
            log.info("restarting download of %s: %s", dest.name, exc)
        except _Interrupted as exc:
            attempts += 1
            kept = part.stat().st_size if part.exists() else 0
            if attempts > retries:
                raise WeightsMissingError(missing_message(
                    dest.name, url, folder,
                    f"the download broke off ({exc}); {kept} bytes are kept and the next try resumes there",
                )) from exc
            log.info("download of %s broke off (%s); resuming at byte %d", dest.name, exc, kept)
        except Cancelled:
            log.info("download of %s cancelled; %s kept for a resume", dest.name, part)
            raise
        except WeightsMissingError as exc:
            raise WeightsMissingError(missing_message(dest.name, url, folder, f"the server answered {exc}")) from exc
        except WeightsCorruptError as exc:
            raise WeightsCorruptError(f"Downloading {dest.name} failed: {exc}.") from exc
        except (OSError, http.client.HTTPException) as exc:
            host = urlsplit(url).hostname
            raise WeightsMissingError(
                missing_message(dest.name, url, folder, f"{host} is unreachable ({_describe(exc)})")
            ) from exc

    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise WeightsCorruptError(
            f"Downloading {dest.name} failed: got {size} bytes, expected {expected_size}. "
            f"The incomplete file was deleted; try again."
        )
    digest = sha256_file(part, cancel=cancel)
    if (sha256 and digest != sha256.lower()) or (sha256_prefix and not digest.startswith(sha256_prefix.lower())):
        part.unlink(missing_ok=True)
        want = sha256 or f"{sha256_prefix}..."
        raise WeightsCorruptError(
            f"Downloading {dest.name} gave a file whose SHA-256 is {digest}, not {want}: it is corrupt "
            f"or not the official file, so it was deleted and will not be loaded. Try the download again."
        )
    if not sha256 and not sha256_prefix:
        log.warning("no hash known for %s; only its size was checked", dest.name)
    commit_file(part, dest)
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, size, digest)
    return DownloadResult(path=dest, size=size, sha256=digest, resumed_from=resumed_from)
