"""download_file against a local HTTP server: progress, hashes, resume, cancel, fast offline failure."""

from __future__ import annotations

import itertools
import threading

import pytest

from car_desktop.engine.cancel import CancelToken
from car_desktop.engine.downloads import download_file, partial_path
from car_desktop.engine.errors import Cancelled, WeightsCorruptError, WeightsMissingError
from test_downloads_helpers import closed_port, fake_checkpoint, file_server, sha  # noqa: F401

DATA = fake_checkpoint(300_000)


def test_progress_reported_and_hash_verified(file_server, tmp_path):
    url = file_server.add("w.pth", DATA)
    dest = tmp_path / "models" / "w.pth"
    calls: list[tuple[int, int | None]] = []
    result = download_file(url, dest, sha256=sha(DATA), expected_size=len(DATA),
                           progress=lambda d, t: calls.append((d, t)), chunk_size=16_384)
    assert dest.read_bytes() == DATA
    assert result.sha256 == sha(DATA) and result.size == len(DATA) and result.resumed_from == 0
    assert not partial_path(dest).exists()
    assert calls[0] == (0, len(DATA)) and calls[-1] == (len(DATA), len(DATA))
    assert len(calls) >= 3
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(calls))


def test_sha256_prefix_is_enough_when_only_a_prefix_is_known(file_server, tmp_path):
    url = file_server.add("w.pth", DATA)
    download_file(url, tmp_path / "ok.pth", sha256_prefix=sha(DATA)[:6])
    assert (tmp_path / "ok.pth").read_bytes() == DATA
    with pytest.raises(WeightsCorruptError):
        download_file(url, tmp_path / "bad.pth", sha256_prefix="000000")
    assert not (tmp_path / "bad.pth").exists() and not partial_path(tmp_path / "bad.pth").exists()


def test_corrupt_download_rejected_and_removed(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="corrupt")
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsCorruptError) as info:
        download_file(url, dest, sha256=sha(DATA), expected_size=len(DATA))
    assert "SHA-256" in str(info.value) and "w.pth" in str(info.value)
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_wrong_size_offered_by_server_is_rejected(file_server, tmp_path):
    url = file_server.add("w.pth", DATA)
    with pytest.raises(WeightsCorruptError):
        download_file(url, tmp_path / "w.pth", expected_size=len(DATA) + 1)
    assert not (tmp_path / "w.pth").exists()


def test_interrupted_download_resumes_with_range(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="drop_half")
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsMissingError) as info:
        download_file(url, dest, sha256=sha(DATA), expected_size=len(DATA))
    assert "resume" in str(info.value)
    kept = partial_path(dest).stat().st_size
    assert 0 < kept < len(DATA)
    assert not dest.exists()

    calls: list[tuple[int, int | None]] = []
    result = download_file(url, dest, sha256=sha(DATA), expected_size=len(DATA),
                           progress=lambda d, t: calls.append((d, t)))
    assert dest.read_bytes() == DATA
    assert result.resumed_from == kept
    assert file_server.gets("w.pth") == [None, f"bytes={kept}-"]
    assert calls[0] == (kept, len(DATA))


def test_retries_resume_within_one_call(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="drop_half")
    file_server.files["w.pth"].drop_times = 2
    dest = tmp_path / "w.pth"
    download_file(url, dest, sha256=sha(DATA), retries=3)
    assert dest.read_bytes() == DATA
    ranges = file_server.gets("w.pth")
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:]) and len(ranges) == 3


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="ignore_range")
    dest = tmp_path / "w.pth"
    partial_path(dest).write_bytes(DATA[:1000])
    result = download_file(url, dest, sha256=sha(DATA))
    assert dest.read_bytes() == DATA and result.resumed_from == 0
    assert file_server.gets("w.pth") == ["bytes=1000-"]


def test_a_complete_part_file_is_only_verified(file_server, tmp_path):
    url = file_server.add("w.pth", DATA)
    dest = tmp_path / "w.pth"
    partial_path(dest).write_bytes(DATA)
    download_file(url, dest, sha256=sha(DATA), expected_size=len(DATA))
    assert dest.read_bytes() == DATA and file_server.gets("w.pth") == []


def test_cancel_leaves_no_file_at_dest(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="stall")
    dest = tmp_path / "w.pth"
    token = CancelToken()
    # Cancel once the server has sent half and stalls: only the cancel can end the blocked read (the
    # stall lasts until the test ends, the read timeout would give WeightsMissingError, not Cancelled).
    threading.Thread(target=lambda: file_server.stalled.wait(30) and token.cancel(), daemon=True).start()
    with pytest.raises(Cancelled):
        download_file(url, dest, sha256=sha(DATA), cancel=token, timeout=60)
    assert not dest.exists()
    assert partial_path(dest).exists()  # kept for a resume
    file_server.release.set()


def test_cancel_from_progress_callback(file_server, tmp_path):
    url = file_server.add("w.pth", DATA)
    dest = tmp_path / "w.pth"
    token = CancelToken()

    def progress(done: int, total: int | None) -> None:
        if done > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        download_file(url, dest, progress=progress, cancel=token, chunk_size=8192)
    assert not dest.exists()


def test_stalled_server_reported_and_part_kept(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="stall")
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsMissingError) as info:   # the stall lasts until the test ends: only the
        download_file(url, dest, timeout=0.5)          # read timeout can end it
    assert file_server.stalled.is_set() and "resume" in str(info.value)
    assert partial_path(dest).stat().st_size > 0 and not dest.exists()


def test_closed_port_fails_fast_with_useful_message(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/segment_anything/sam_vit_b_01ec64.pth"
    dest = tmp_path / "models" / "sam_vit_b" / "sam_vit_b_01ec64.pth"
    with pytest.raises(WeightsMissingError) as info:
        download_file(url, dest, sha256="0" * 64)
    msg = str(info.value)
    assert "sam_vit_b_01ec64.pth" in msg and url in msg and str(dest.parent) in msg
    assert "refused" in msg
    assert not dest.exists()


def test_unresolvable_host_fails_fast(tmp_path):
    url = "http://no-such-host.invalid/w.pth"
    with pytest.raises(WeightsMissingError) as info:
        download_file(url, tmp_path / "w.pth")
    assert url in str(info.value) and "no-such-host.invalid" in str(info.value)


def test_http_error_is_a_clear_message(file_server, tmp_path):
    url = file_server.url("absent.pth")
    with pytest.raises(WeightsMissingError) as info:
        download_file(url, tmp_path / "absent.pth")
    assert "404" in str(info.value) and url in str(info.value)
    assert not (tmp_path / "absent.pth").exists()


def test_a_server_trickling_one_byte_every_1_5_s_fails_in_bounded_time(file_server, tmp_path):
    """The stall limit: fewer than stall_min_bytes in stall_timeout seconds ends the download with a
    clear message (the default limits are seconds: 16 KiB in 15 s; here 3 s keeps the test short)."""
    from car_desktop.engine import downloads

    assert downloads.DEFAULT_STALL_TIMEOUT <= 30 and downloads.DEFAULT_READ_TIMEOUT <= 30
    url = file_server.add("w.pth", DATA, mode="trickle")
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsMissingError) as info:
        download_file(url, dest, stall_timeout=3, retries=3)
    msg = str(info.value)
    assert "stalled or far too slow" in msg and "w.pth" in msg and "resumes" in msg
    served = file_server.files["w.pth"]
    kept = partial_path(dest).stat().st_size
    assert 1 <= kept <= 4  # a 1.5 s trickle over a 3 s window: the client stopped after a few bytes
    assert served.sent <= kept + 1  # (a write racing the close may still count on the server side)
    assert len(file_server.gets("w.pth")) == 1  # a stall is not retried
    assert not dest.exists()


def test_the_overall_deadline_bounds_a_slow_but_steady_download(file_server, tmp_path):
    url = file_server.add("w.pth", DATA, mode="trickle")
    file_server.files["w.pth"].trickle_s = 0.01  # fast enough for the stall check, too slow for the deadline
    dest = tmp_path / "w.pth"
    with pytest.raises(WeightsMissingError, match="longer than its deadline"):
        download_file(url, dest, stall_timeout=60, stall_min_bytes=1, deadline=1.0)
    assert file_server.files["w.pth"].sent < len(DATA) and not dest.exists()
