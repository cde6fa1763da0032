"""The CRF helper process: ``python -m car_desktop.engine.crf_worker`` serves dense CRFs over a pipe.

Started by crf.py from this module's own entry point, so it never imports the caller's ``__main__``
(a script without ``if __name__ == "__main__"`` would otherwise run again inside the helper). It
imports numpy and pydensecrf only, never torch or Qt.

Protocol: frames of an 8-byte little-endian length and a pickle, on stdin (requests) and stdout
(replies). A request is ``("crf", image, probs, params, colour)`` or ``("ping",)``; a reply is
``("ok", payload)`` or ``("error", message)``. Both ends are this package, so pickle is safe here.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")
#: A frame larger than this is a protocol error, not an allocation (a 24-megapixel image with 20
#: labels is about 2 GB of float32 probabilities; the engine's working size keeps it far smaller).
MAX_FRAME_BYTES = 4 << 30


def write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> Any:
    """The next object on ``stream``; EOFError when the other end closed it."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        raise EOFError("pipe closed")
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    data = _read_exact(stream, size)
    if data is None:
        raise EOFError("pipe closed mid-frame")
    return pickle.loads(data)


def handle(request: Any) -> tuple[str, Any]:
    """One request's reply."""
    from .crf import dense_crf

    try:
        kind = request[0]
        if kind == "ping":
            return ("ok", "pong")
        if kind == "crf":
            _, image, probs, params, colour = request
            return ("ok", dense_crf(image, probs, params, colour=colour))
        return ("error", f"unknown request {kind!r}")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which falls back in-process
        return ("error", f"{type(exc).__name__}: {exc}")


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until the parent closes the pipe."""
    while True:
        try:
            request = read_frame(requests)
        except EOFError:
            return
        write_frame(replies, handle(request))


def main() -> None:
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply pipe
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
