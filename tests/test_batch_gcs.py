"""``car-desktop batch gs://bucket/prefix`` against a local GCS emulator (gcp-storage-emulator, in memory).

The files of test_batch_remote (plain PNGs, one in a sub-folder, a 16-bit PNG, an EXIF-turned JPEG, a
corrupt PNG) are uploaded to a bucket through pyarrow's own GCS client, and ``STORAGE_EMULATOR_HOST``
points the image source at the emulator. The local batch on the bucket (and ``--ray``, marked slow, whose
processes were started without the storage variables) gives the masks of the local folder pixel for pixel
and lists the corrupt file as a failure; a missing bucket is one clear error before any project is made.
"""

from __future__ import annotations

import logging
import socket

import pytest

from car_desktop import imagesource
from car_desktop.annotations import Project
from car_desktop.cli import main
from car_desktop.imagesource import RemoteImages, canonical_root
from test_batch_ray import assert_same, local_ray, state
from test_batch_remote import _failures, _files, batch_args, local_folder, one_thread, reference  # noqa: F401

pa_fs = pytest.importorskip("pyarrow.fs")
emulator_server = pytest.importorskip("gcp_storage_emulator.server")

BUCKET = "car-images"
SECRET = "gs-topsecret"


@pytest.fixture(scope="module")
def gcs():
    """A GCS emulator (in memory) on a free local port, ``STORAGE_EMULATOR_HOST`` naming it, the files uploaded."""
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in imagesource.STORAGE_ENV:
                mp.delenv(name, raising=False)
            mp.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{port}")
            filesystem = pa_fs.GcsFileSystem(anonymous=True, endpoint_override=f"127.0.0.1:{port}", scheme="http")
            for rel, data in _files().items():
                with filesystem.open_output_stream(f"{BUCKET}/imgs/{rel}") as fh:
                    fh.write(data)
            yield port
    finally:
        server.stop()


def test_local_batch_on_gs_equals_the_local_folder(gcs, reference, tmp_path, capsys, one_thread):
    project = tmp_path / "remote.cardb"
    capsys.readouterr()
    uri = f"gs://user:{SECRET}@{BUCKET}/imgs/?access_token={SECRET}"  # dropped, never stored
    assert main(batch_args(uri, project)) == 1  # the corrupt file
    out = capsys.readouterr().out
    assert "labelled 6, skipped 0, failed 1" in out
    failures = _failures(out)
    assert set(failures) == {"corrupt.png"} and "not an image" in failures["corrupt.png"]
    assert_same(state(project), reference)
    assert sum(len(anns) for _, _, anns in reference.values()) > 0
    with Project.open(project) as proj:
        assert proj.image_root_uri == f"gs://{BUCKET}/imgs"
        turned = proj.find_image("turned.jpg")
        assert (turned.width, turned.height) == (64, 80)  # EXIF applied, as for the local file
        assert proj.get_failure("corrupt.png").content_hash is not None
    for p in project.parent.glob(project.name + "*"):
        assert SECRET.encode() not in p.read_bytes(), p
    assert main(batch_args(f"gcs://{BUCKET}/imgs", project)) == 1  # the same folder: nothing to do
    assert "labelled 0, skipped 6" in capsys.readouterr().out


def test_a_missing_bucket_or_prefix_is_one_clear_error(gcs, tmp_path, capsys):
    for uri in ("gs://no-such-bucket-here/imgs", f"gs://{BUCKET}/other"):
        assert main(batch_args(uri, tmp_path / "p.cardb")) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and uri in errors[0] and "nothing there" in errors[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before a project was made


def test_gs_roots_and_the_emulator_endpoint(gcs, monkeypatch):
    assert canonical_root(f"GS://user:{SECRET}@{BUCKET}/imgs//sub/?access_token={SECRET}") == f"gs://{BUCKET}/imgs/sub"
    assert canonical_root(f"gcs://{BUCKET}/") == f"gs://{BUCKET}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{gcs}")  # with a scheme, as some tools write it
    source = RemoteImages(f"gs://{BUCKET}/imgs")
    assert isinstance(source.filesystem, pa_fs.GcsFileSystem)
    assert source.scan().files == sorted(rel for rel in _files() if rel != "notes.txt")
    assert source.read_bytes("sub/im03.png") == _files()["sub/im03.png"]
    assert source.scan("sub").files == ["sub/im03.png"]


@pytest.fixture(scope="module")
def ray_address(gcs):
    """A local Ray whose processes do not have the storage variables: the run must forward them."""
    with local_ray(imagesource.STORAGE_ENV) as address:
        yield address


@pytest.mark.slow
def test_ray_batch_on_gs_equals_the_local_folder(ray_address, gcs, reference, tmp_path, capsys):
    project = tmp_path / "ray.cardb"
    capsys.readouterr()
    assert main(batch_args(f"gs://{BUCKET}/imgs", project, "--ray", "--workers", "2")) == 1
    out = capsys.readouterr().out
    assert "labelled 6, skipped 0, failed 1" in out and set(_failures(out)) == {"corrupt.png"}
    assert_same(state(project), reference)


def test_gcs_requests_give_up_in_bounded_time(monkeypatch):
    """Without an emulator the real GCS client is built with a retry limit (no network, or no credentials,
    must fail in seconds rather than look hung); with one, the same limit."""
    made: list[dict] = []

    class FakeFs:
        @staticmethod
        def GcsFileSystem(**kwargs):
            made.append(kwargs)
            return object()

    monkeypatch.setattr(imagesource, "_pyarrow_fs", lambda: FakeFs)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    _, path = imagesource.open_filesystem("gs://bucket/some/prefix")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9")
    imagesource.open_filesystem("gs://bucket/p")
    assert path == "bucket/some/prefix"
    limits = [m["retry_time_limit"].total_seconds() for m in made]
    assert limits == [imagesource.GCS_RETRY_LIMIT_S] * 2 and 0 < imagesource.GCS_RETRY_LIMIT_S <= 60
    assert "anonymous" not in made[0] and made[1]["anonymous"] and made[1]["endpoint_override"] == "127.0.0.1:9"
