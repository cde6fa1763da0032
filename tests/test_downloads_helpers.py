"""A local HTTP file server for download tests (127.0.0.1 only), with ways to misbehave.

Modes per file: serve normally (with Range support), ignore Range, drop the connection halfway,
serve corrupt bytes of the right length, or stall halfway until released. Every request's path and
Range header is recorded so tests can assert what the client asked for. No tests live here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Served:
    data: bytes
    mode: str = "ok"  # ok | ignore_range | drop_half | corrupt | stall | trickle | status:<code>
    drop_times: int = 1  # how many requests the drop_half mode affects
    trickle_s: float = 1.5  # trickle: one byte every this many seconds
    sent: int = 0  # trickle: bytes sent so far (all requests)


@dataclass
class FileServer:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)   # ends every stall
    stalled: threading.Event = field(default_factory=threading.Event)   # a stall has begun
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, data: bytes, mode: str = "ok") -> str:
        self.files[name] = Served(data, mode)
        return self.url(name)

    def gets(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path == f"/{name}"]


def make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            state.requests.append(("HEAD " + self.path, None))
            served = state.files.get(self.path.lstrip("/"))
            if served is None:
                self.send_error(404, "not found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served.data)))
            self.send_header("ETag", f'"{hashlib.sha256(served.data).hexdigest()}"')
            self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
            self.end_headers()

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            served = state.files.get(self.path.lstrip("/"))
            if served is None:
                self.send_error(404, "not found")
                return
            if served.mode.startswith("status:"):
                self.send_error(int(served.mode.split(":")[1]))
                return
            data = served.data
            if served.mode == "corrupt":
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
            start = 0
            if rng and served.mode != "ignore_range" and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if served.mode == "drop_half" and served.drop_times > 0:
                served.drop_times -= 1
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if served.mode == "trickle":
                for i in range(len(body)):
                    try:
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up: what the test wants
                        return
                    served.sent += 1
                    if state.release.wait(served.trickle_s):
                        return
                return
            if served.mode == "stall":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                state.stalled.set()
                state.release.wait()          # the fixture releases every stall when the test ends
                with contextlib.suppress(OSError):
                    self.wfile.write(body[len(body) // 2:])
                return
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # dropped connections are the point
        pass


@pytest.fixture
def file_server():
    state = FileServer()
    server = _QuietServer(("127.0.0.1", 0), make_handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A local port with nothing listening on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def fake_checkpoint(n_bytes: int = 200_000, seed: int = 0) -> bytes:
    """A zip archive shaped like a torch checkpoint of a SAM model (passes the structural check and
    names SAM's weights), of about n_bytes."""
    payload = hashlib.sha256(str(seed).encode()).digest() * (n_bytes // 32 + 1)
    buf = io.BytesIO()
    keys = {"image_encoder.patch_embed.proj.weight": 0, "mask_decoder.iou_token.weight": 0}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(keys, protocol=2))
        zf.writestr("archive/data/0", payload[:n_bytes])
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
