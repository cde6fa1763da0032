"""``car-desktop batch s3://bucket/prefix`` against a local S3 server (moto), tiny test models, SAM off.

The same files (small PNGs in a sub-folder too, a 16-bit PNG, a JPEG with an EXIF quarter turn, a
corrupt PNG) are uploaded to a bucket and kept in a local folder. The local batch on the bucket, and
``--ray`` on it (a local Ray whose processes were started without the storage variables, so the reads
work only because the driver forwards them), give the masks of the local folder pixel for pixel, list
the corrupt file as a failure (exit 1), and store no credential in the project. Output paths that are
URIs are refused. The image source's own rules (canonical URIs, the size limit checked before a byte
is read, bounded retries) are checked on a fake file system.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from car_desktop import imagefiles, imagesource
from car_desktop.annotations import Project
from car_desktop.cli import main
from car_desktop.engine.errors import ImageLoadError
from car_desktop.errors import NotLocalError
from car_desktop.imagesource import RemoteImages, SourceError, canonical_root
from test_batch_cli import CONCEPTS, make_image
from test_batch_ray import assert_same, local_ray, state

pytest.importorskip("pyarrow")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "car-images"
SECRET = f"moto-secret-{secrets.token_hex(8)}"


def batch_args(images: str | Path, project: Path, *extra: str) -> list[str]:
    return ["--test-models", "batch", str(images), "--concepts", CONCEPTS, "--project", str(project),
            "--sam", "off", *extra]


def _files() -> dict[str, bytes]:
    """rel path -> bytes: plain PNGs (one in a sub-folder), a 16-bit PNG, an EXIF-rotated JPEG, a corrupt PNG."""
    out = {}
    for i in range(4):
        buf = io.BytesIO()
        Image.fromarray(make_image(i)).save(buf, "PNG")
        out[f"sub/im{i:02d}.png" if i == 3 else f"im{i:02d}.png"] = buf.getvalue()
    deep = make_image(4).astype(np.uint16) * 257 + 100
    out["deep16.png"] = cv2.imencode(".png", deep[..., ::-1])[1].tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn: the displayed image is 64 wide, 80 high
    buf = io.BytesIO()
    Image.fromarray(make_image(5)).save(buf, "JPEG", quality=95, exif=exif)
    out["turned.jpg"] = buf.getvalue()
    out["corrupt.png"] = b"\x89PNG\r\n\x1a\n this is not really a png"
    out["notes.txt"] = b"not an image: never listed"
    return out


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port, the environment pointing at it, the files uploaded."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        for name in imagesource.STORAGE_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        for rel, data in _files().items():
            client.put_object(Bucket=BUCKET, Key=f"imgs/{rel}", Body=data)
        try:
            yield client
        finally:
            server.stop()


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote") / "imgs"
    for rel, data in _files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as each Ray worker actor has: the same float sums everywhere."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(local_folder, tmp_path_factory, one_thread):
    project = tmp_path_factory.mktemp("ref") / "local.cardb"
    assert main(batch_args(local_folder, project)) == 1  # the corrupt file
    return state(project)


def _failures(out: str) -> dict[str, str]:
    return dict(line.strip().split(": ", 1) for line in out.split("failures:\n")[1].splitlines()
                if line.startswith("  ") and ": " in line)


def _assert_no_secret(project: Path) -> None:
    for p in project.parent.glob(project.name + "*"):
        data = p.read_bytes()
        assert SECRET.encode() not in data and b"topsecret" not in data and b"AKIDEXAMPLE" not in data, p


def test_local_batch_on_s3_equals_the_local_folder_and_stores_no_credential(s3, reference, local_folder, tmp_path,
                                                                             capsys, one_thread):
    project = tmp_path / "remote.cardb"
    capsys.readouterr()
    # Credentials in the URI (user:password@, a key in the query) are dropped, never stored.
    uri = f"s3://AKIDEXAMPLE:topsecret@{BUCKET}/imgs/?secret_key=topsecret2"
    assert main(batch_args(uri, project)) == 1
    out = capsys.readouterr().out
    assert "labelled 6, skipped 0, failed 1" in out
    assert set(_failures(out)) == {"corrupt.png"} and "not an image" in _failures(out)["corrupt.png"]
    got = state(project)
    assert_same(got, reference)
    assert sum(len(anns) for _, _, anns in reference.values()) > 0
    with Project.open(project) as proj:
        assert proj.image_root_uri == f"s3://{BUCKET}/imgs"
        turned = proj.find_image("turned.jpg")
        assert (turned.width, turned.height) == (64, 80)  # EXIF applied, as for the local file
        with pytest.raises(NotLocalError, match=f"s3://{BUCKET}/imgs"):
            proj.image_root  # noqa: B018 - a local path on a remote project is an error, not a wrong path
        assert proj.get_failure("corrupt.png").content_hash is not None  # --skip-failed can compare it
    _assert_no_secret(project)
    coco = tmp_path / "out.json"  # a remote project exports to a local file like any other
    assert main(["export", str(project), "--coco", str(coco)]) == 0
    assert sorted(im["file_name"] for im in json.loads(coco.read_text())["images"]) == sorted(got)

    # Rerun: nothing to do; the same prefix without the credentials is the same image folder.
    assert main(batch_args(f"s3://{BUCKET}/imgs", project)) == 1
    assert "labelled 0, skipped 6" in capsys.readouterr().out
    assert main(batch_args(f"s3://{BUCKET}/imgs", project, "--skip-failed")) == 0
    # A local folder is not this project's image folder; an empty prefix is no image folder at all.
    assert main(batch_args(local_folder, project)) == 2
    assert "not inside the image folder" in capsys.readouterr().err
    assert main(batch_args(f"s3://{BUCKET}/other", project)) == 2
    assert "nothing there" in capsys.readouterr().err


def test_a_prefix_under_the_root_adds_only_its_images(s3, tmp_path, capsys):
    project = tmp_path / "p.cardb"
    with Project.create(project, f"s3://{BUCKET}/imgs") as proj:
        records, failures = proj.add_folder(f"s3://{BUCKET}/imgs/sub")
        assert [r.rel_path for r in records] == ["sub/im03.png"] and failures == []
        assert proj.output_guard().check_file(tmp_path / "out.json") == tmp_path / "out.json"


def test_export_and_output_paths_that_are_uris_are_refused(s3, local_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "p.cardb"
    for target in ("s3://bucket/out.json", "gs://bucket/out.json"):
        assert main(batch_args(local_folder, project, "--export", target)) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"to {target}: it is a URL" in errors[0] and "Traceback" not in err
    with Project.create(tmp_path / "q.cardb", local_folder):
        pass
    assert main(["export", str(tmp_path / "q.cardb"), "--coco", "gs://bucket/x.json"]) == 2
    assert "it is a URL" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.cardb", "q.cardb"]  # no local "s3:" or "gs:" folder
    with Project.open(project) as proj:
        assert proj.count_images() == 0  # refused before any image was labelled


def test_relink_moves_a_project_between_the_bucket_and_a_local_copy(s3, local_folder, tmp_path, capsys):
    project = tmp_path / "p.cardb"
    with Project.create(project, f"s3://{BUCKET}/imgs") as proj:
        proj.add_folder(f"s3://{BUCKET}/imgs")
        proj.add_image_entry("gone.png", 80, 64)
    assert main(["relink", str(project), str(local_folder)]) == 1  # every image but the one never uploaded
    out = capsys.readouterr().out
    assert "6 found by path" in out and "missing: gone.png" in out
    with Project.open(project) as proj:
        assert proj.image_root_uri is None and proj.image_root == local_folder.resolve()
        assert proj.image_path(proj.find_image("im00.png").id).read_bytes() == _files()["im00.png"]
    before = project.read_bytes()
    assert main(["relink", str(project), f"s3://{BUCKET}/imgs/sub"]) == 2  # none of them there: unchanged
    assert "nothing was changed" in capsys.readouterr().err and project.read_bytes() == before
    assert main(["relink", str(project), f"s3://key:{SECRET}@{BUCKET}/imgs/"]) == 1
    with Project.open(project) as proj:
        assert proj.image_root_uri == f"s3://{BUCKET}/imgs"
    _assert_no_secret(project)


@pytest.fixture(scope="module")
def ray_address(s3):
    """A local Ray whose processes do not have the storage variables: the run must forward them."""
    with local_ray(imagesource.STORAGE_ENV) as address:
        yield address


@pytest.mark.slow
def test_ray_batch_on_s3_equals_the_local_folder(ray_address, s3, reference, tmp_path, capsys):
    project = tmp_path / "ray.cardb"
    capsys.readouterr()
    assert main(batch_args(f"s3://{BUCKET}/imgs", project, "--ray", "--workers", "2")) == 1
    out = capsys.readouterr().out
    assert "labelled 6, skipped 0, failed 1" in out and set(_failures(out)) == {"corrupt.png"}
    assert_same(state(project), reference)
    _assert_no_secret(project)
    assert main(batch_args(f"s3://{BUCKET}/imgs", project, "--ray")) == 1
    assert "labelled 0, skipped 6" in capsys.readouterr().out


@pytest.mark.slow
def test_ray_refuses_files_grown_over_the_limit_before_reading_them(ray_address, s3, tmp_path, capsys,
                                                                     monkeypatch):
    project = tmp_path / "grown.cardb"
    with Project.create(project, f"s3://{BUCKET}/imgs") as proj:
        proj.add_folder(f"s3://{BUCKET}/imgs")  # added within the limit...
    from car_desktop import autolabel_ray

    monkeypatch.setattr(autolabel_ray, "max_file_bytes", lambda: 16)  # ...over it by the time the run starts
    monkeypatch.setattr(autolabel_ray, "build_dataset", lambda *a, **k: pytest.fail("nothing is to be read"))
    assert main(batch_args(f"s3://{BUCKET}/imgs", project, "--ray")) == 1
    failures = _failures(capsys.readouterr().out)
    assert set(failures) == {*_files()} - {"notes.txt"}
    assert all(why.startswith("the file is too large") and "at most 16 bytes" in why
               for rel, why in failures.items() if rel != "corrupt.png")


# ------------------------------------------------------------------------------- the image source itself
def test_canonical_roots_drop_credentials_and_trailing_slashes():
    assert canonical_root("S3://user:pass@bucket/a/b/?access_key=K&secret_key=S#x") == "s3://bucket/a/b"
    assert canonical_root("gcs://bucket//a/./b/") == "gs://bucket/a/b"
    assert canonical_root("gs://bucket") == "gs://bucket"
    for bad in ("http://example.com/x", "s3:///nobucket", "ftp://h/x"):
        with pytest.raises(SourceError):
            canonical_root(bad)


class _FakeFS:
    """A pyarrow-like file system with one object: its size as listed, and read failures to inject."""

    def __init__(self, size: int, data: bytes = b"", errors: list[OSError] = ()) -> None:
        self.size, self.data, self.errors, self.opened = size, data, list(errors), 0

    def get_file_info(self, path):
        from pyarrow import fs

        return fs.FileInfo(path, type=fs.FileType.File, size=self.size)

    def open_input_stream(self, path):
        self.opened += 1
        if self.errors:
            raise self.errors.pop(0)
        return io.BytesIO(self.data)


def test_the_size_limit_is_checked_before_a_byte_is_read():
    imagefiles.set_max_pixels(1000)
    try:
        fake = _FakeFS(size=imagefiles.max_file_bytes() + 1)
        with pytest.raises(imagefiles.ImageTooLargeError, match=re.escape("s3://b/p/big.png: the file is too large")):
            RemoteImages("s3://b/p", filesystem=fake).read_bytes("big.png")
        assert fake.opened == 0
    finally:
        imagefiles.set_max_pixels(None)


def test_transient_errors_are_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(imagesource, "_BACKOFF_S", 0.0)
    flaky = _FakeFS(5, b"12345", [OSError("AWS Error NETWORK_CONNECTION during GetObject: connection reset")])
    assert RemoteImages("s3://b/p", filesystem=flaky).read_bytes("a.png") == b"12345" and flaky.opened == 2
    down = _FakeFS(5, b"12345", [OSError("HTTP 503 service unavailable")] * 10)
    with pytest.raises(ImageLoadError, match="cannot be read"):
        RemoteImages("s3://b/p", filesystem=down).read_bytes("a.png")
    assert down.opened == imagesource.RETRIES
    denied = _FakeFS(5, b"12345", [OSError("AWS Error ACCESS_DENIED during GetObject")])
    with pytest.raises(ImageLoadError, match="ACCESS_DENIED"):
        RemoteImages("s3://b/p", filesystem=denied).read_bytes("a.png")
    assert denied.opened == 1  # not transient: not tried again


def test_a_missing_bucket_is_one_clear_error(s3, tmp_path, capsys):
    assert main(batch_args("s3://no-such-bucket-here/imgs", tmp_path / "p.cardb")) == 2
    err = capsys.readouterr().err
    assert "no-such-bucket-here" in err and "Traceback" not in err


def test_the_image_source_needs_neither_torch_qt_nor_pyarrow_for_a_local_root():
    import subprocess
    import sys

    code = ("import json, sys; from car_desktop import imagesource as s; s.canonical_root('s3://b/x'); "
            "s.open_source('.').scan(); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'PySide6', 'pyarrow', 'cv2', 'ray'})))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_window_refuses_a_project_whose_images_are_in_a_bucket(qtbot, tmp_path):
    from fakes import fake_window

    project = tmp_path / "remote.cardb"
    with Project.create(project, f"s3://{BUCKET}/imgs"):  # no network: nothing is listed or read
        pass
    win = fake_window(qtbot, tmp_path)
    try:
        assert not win.open_project(project)
        assert win.project is None
        assert f"s3://{BUCKET}/imgs, not in a local folder" in win.last_error and "relink" in win.last_error
    finally:
        win.close()
