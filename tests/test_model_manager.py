"""ModelManager, the resolve_* functions and ``car-desktop models``: status, downloads, offline errors."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from car_desktop.cli import main
from car_desktop.engine import model_manager as mm
from car_desktop.engine.downloads import partial_path
from car_desktop.engine.errors import WeightsCorruptError, WeightsMissingError
from car_desktop.engine.manifest import ModelSpec, load_manifest
from car_desktop.engine.model_manager import ModelManager, resolve_clip_pretrained, resolve_sam_checkpoint
from test_downloads_helpers import fake_checkpoint, file_server, sha  # noqa: F401

DATA = fake_checkpoint(250_000, seed=1)


def tiny_safetensors(n_floats: int = 4) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * (4 * n_floats)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Cache, config and home in tmp; downloads allowed (tests that want them off say so)."""
    monkeypatch.setenv("CAR_DESKTOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAR_DESKTOP_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.fixture
def manager(env, file_server, monkeypatch):
    monkeypatch.delenv("CAR_DESKTOP_NO_DOWNLOAD", raising=False)
    url = file_server.add("tiny_sam.pth", DATA)
    spec = ModelSpec(name="tiny_sam", kind="sam", title="tiny", filename="tiny_sam.pth", url=url,
                     size=len(DATA), sha256=sha(DATA), sam_model_type="vit_b")
    return ModelManager(env / "cache", manifest={"tiny_sam": spec}, config_dir=env / "config")


def test_bundled_manifest_lists_the_models():
    specs = load_manifest()
    assert {"clip_vit_b_16", "clip_vit_l_14", "sam_vit_b", "sam_vit_l", "sam_vit_h"} <= set(specs)
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        s = specs[name]
        assert s.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_")
        assert len(s.sha256 or "") == 64 and s.size and s.size > 300_000_000
    assert specs["clip_vit_b_16"].hf_repo == "timm/vit_base_patch16_clip_224.openai"
    assert specs["mobilesam_vit_t"].optional and specs["mobilesam_vit_t"].package == "mobilesam-mirror"


def test_manifest_clip_repos_match_open_clip():
    import open_clip

    for name in ("clip_vit_b_16", "clip_vit_l_14"):
        spec = load_manifest()[name]
        cfg = open_clip.get_pretrained_cfg(spec.open_clip_model, spec.open_clip_tag)
        assert cfg["hf_hub"].rstrip("/") == spec.hf_repo
        assert cfg["url"] == spec.openai_file.url


def test_download_then_present_and_verified(manager, file_server):
    assert manager.status("tiny_sam").state == "missing"
    calls = []
    path = manager.download("tiny_sam", progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == DATA and path.parent == manager.folder_for("tiny_sam")
    assert calls[-1] == (len(DATA), len(DATA))
    st = manager.status("tiny_sam")
    assert (st.state, st.verified, st.source, st.size) == ("present", True, "cache", len(DATA))
    assert manager.download("tiny_sam") == path  # present: no second request
    assert len(file_server.gets("tiny_sam.pth")) == 1


def test_corrupt_download_is_not_kept_or_loaded(manager, file_server):
    file_server.files["tiny_sam.pth"].mode = "corrupt"
    with pytest.raises(WeightsCorruptError):
        manager.download("tiny_sam")
    st = manager.status("tiny_sam")
    assert st.state == "missing" and not st.path.exists()
    assert not partial_path(st.path).exists()


def test_truncated_file_in_cache_is_corrupt(manager):
    target = manager.download_target("tiny_sam")
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA[: len(DATA) // 2])
    st = manager.status("tiny_sam")
    assert st.state == "corrupt" and "instead of" in st.detail


def test_wrong_content_of_right_size_is_caught_by_verify(manager):
    other = fake_checkpoint(250_000, seed=2)
    assert len(other) == len(DATA) and other != DATA
    target = manager.download_target("tiny_sam")
    target.parent.mkdir(parents=True)
    target.write_bytes(other)
    assert manager.status("tiny_sam").state == "present"  # cheap checks pass...
    st = manager.verify("tiny_sam")
    assert st.state == "corrupt" and "SHA-256" in st.detail  # ...the hash does not


def test_ensure_hashes_a_manual_copy_before_use_and_replaces_a_bad_one(manager, file_server):
    target = manager.download_target("tiny_sam")
    target.parent.mkdir(parents=True)
    target.write_bytes(fake_checkpoint(250_000, seed=3))
    path = manager.ensure("tiny_sam")
    assert path.read_bytes() == DATA  # the bad copy was detected, removed and downloaded again
    assert len(file_server.gets("tiny_sam.pth")) == 1


def test_interrupted_manager_download_resumes_within_the_call(manager, file_server):
    file_server.files["tiny_sam.pth"].mode = "drop_half"
    path = manager.download("tiny_sam")
    assert path.read_bytes() == DATA
    assert file_server.gets("tiny_sam.pth")[1].startswith("bytes=")


def test_local_file_takes_precedence_and_persists(manager, env):
    mine = env / "my_sam.pth"
    mine.write_bytes(fake_checkpoint(1000, seed=9))
    manager.set_local_file("tiny_sam", mine)
    again = ModelManager(env / "cache", manifest={"tiny_sam": manager.spec("tiny_sam")}, config_dir=env / "config")
    st = again.status("tiny_sam")
    assert (st.state, st.source, st.path) == ("present", "local file", mine.resolve())
    assert again.path_for("tiny_sam") == mine.resolve()
    mine.unlink()
    assert again.status("tiny_sam").state == "missing"
    with pytest.raises(WeightsMissingError):
        again.ensure("tiny_sam")
    again.set_local_file("tiny_sam", None)
    assert again.status("tiny_sam").source is None


def test_two_threads_share_one_download(manager, file_server):
    file_server.files["tiny_sam.pth"].mode = "stall"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(manager.download("tiny_sam"))) for _ in range(2)]
    for t in threads:
        t.start()
    assert file_server.stalled.wait(10)          # one download is halfway, held by the server
    assert manager.status("tiny_sam").state == "downloading"
    file_server.release.set()
    for t in threads:
        t.join(10)
    assert len(results) == 2 and results[0] == results[1] and results[0].read_bytes() == DATA
    assert len(file_server.gets("tiny_sam.pth")) == 1


@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to open a network connection or look up a host, refused and recorded: an offline
    failure that makes none cannot hang on the network."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_resolve_sam_offline_is_fast_and_says_what_to_do(env, monkeypatch, network_attempts):
    monkeypatch.setenv("CAR_DESKTOP_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsMissingError) as info:
        resolve_sam_checkpoint("vit_b")
    assert network_attempts == []
    msg = str(info.value)
    folder = env / "cache" / "models" / "sam_vit_b"
    assert "sam_vit_b_01ec64.pth" in msg and str(folder) in msg
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in msg


def test_resolve_sam_picks_up_a_manual_copy(env, monkeypatch):
    """A file dropped in the named folder is used (structure-checked; no reference hash for it here)."""
    mgr = ModelManager()
    spec = mgr.spec("sam_vit_b")
    fake = ModelSpec(**{**spec.__dict__, "size": len(DATA), "sha256": sha(DATA)})
    mgr._specs["sam_vit_b"] = fake
    target = mgr.download_target("sam_vit_b")
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA)
    assert resolve_sam_checkpoint("vit_b", manager=mgr) == target
    assert mgr.status("sam_vit_b").verified


def test_resolve_clip_with_hf_offline_fails_fast(env, monkeypatch, network_attempts):
    monkeypatch.delenv("CAR_DESKTOP_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as info:
        resolve_clip_pretrained("ViT-B-16", "openai")
    assert network_attempts == []
    msg = str(info.value)
    assert "open_clip_model.safetensors" in msg and "HF_HUB_OFFLINE" in msg
    assert ("https://huggingface.co/timm/vit_base_patch16_clip_224.openai/resolve/main/"
            "open_clip_model.safetensors") in msg
    assert str(env / "cache" / "models" / "clip_vit_b_16") in msg


def test_resolve_clip_finds_the_hugging_face_cache(env):
    snap = env / "hf" / "models--timm--vit_base_patch16_clip_224.openai"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    weights = snap / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.write_bytes(tiny_safetensors())
    assert resolve_clip_pretrained("ViT-B-16", "openai") == weights
    st = ModelManager().status("clip_vit_b_16")
    assert (st.state, st.source) == ("present", "hugging face cache")


def test_truncated_safetensors_in_the_model_folder_is_corrupt(env):
    mgr = ModelManager()
    target = mgr.download_target("clip_vit_l_14")
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_safetensors()[:-3])
    st = mgr.status("clip_vit_l_14")
    assert st.state == "corrupt" and "header" in st.detail
    with pytest.raises(WeightsMissingError):  # never returned; offline, so a clear error instead
        resolve_clip_pretrained("ViT-L-14", "openai")


def test_resolve_clip_accepts_a_file_as_tag_and_other_open_clip_names(env, monkeypatch):
    f = env / "mine.safetensors"
    f.write_bytes(tiny_safetensors())
    assert resolve_clip_pretrained("ViT-B-16", str(f)) == f
    with pytest.raises(WeightsMissingError) as info:
        resolve_clip_pretrained("ViT-B-32", "openai")  # not in the manifest: spec from open_clip
    assert "vit_base_patch32_clip_224.openai" in str(info.value)


def test_cli_models_list_use_path_and_offline_download(env, capsys, network_attempts):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_b" in out and "clip_vit_b_16" in out and "missing" in out

    mine = env / "my_sam.pth"
    mine.write_bytes(DATA)
    assert main(["models", "use", "vit_b", str(mine)]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sam_vit_b"]["state"] == "present" and rows["sam_vit_b"]["source"] == "local file"

    assert main(["models", "path", "sam_vit_b"]) == 0
    assert capsys.readouterr().out.strip() == str(mine.resolve())
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(env / "cache" / "models")

    assert main(["models", "download", "sam_vit_l"]) == 2  # CAR_DESKTOP_NO_DOWNLOAD=1 in conftest
    assert network_attempts == []
    err = capsys.readouterr().err
    assert "sam_vit_l_0b3195.pth" in err and "Traceback" not in err


def test_cli_download_and_verify_with_progress_bar(manager, monkeypatch, capsys):
    monkeypatch.setattr(mm.ModelManager, "__init__", lambda self, *a, **k: self.__dict__.update(manager.__dict__))
    assert main(["models", "download", "tiny_sam"]) == 0
    cap = capsys.readouterr()
    assert "100.0%" in cap.err and str(manager.download_target("tiny_sam")) in cap.out
    assert main(["models", "verify"]) == 0
    assert "present (verified)" in capsys.readouterr().out


def _hf_env(env, file_server, monkeypatch, data: bytes, mode: str = "ok") -> ModelManager:
    """A manager whose CLIP model comes from a fake Hugging Face endpoint on 127.0.0.1."""
    import huggingface_hub.constants as hfc

    monkeypatch.delenv("CAR_DESKTOP_NO_DOWNLOAD", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{file_server.port}")
    file_server.add("org/tiny-clip/resolve/main/open_clip_model.safetensors", data, mode=mode)
    spec = ModelSpec(name="tiny_clip", kind="clip", title="tiny clip", filename="open_clip_model.safetensors",
                     url=file_server.url("org/tiny-clip/resolve/main/open_clip_model.safetensors"), source="hf",
                     hf_repo="org/tiny-clip", open_clip_model="tiny", open_clip_tag="test")
    return ModelManager(env / "cache", manifest={"tiny_clip": spec}, config_dir=env / "config")


def test_clip_download_through_huggingface_hub(env, file_server, monkeypatch):
    data = tiny_safetensors(50_000)
    mgr = _hf_env(env, file_server, monkeypatch, data)
    calls = []
    path = resolve_clip_pretrained("tiny", "test", progress=lambda d, t: calls.append((d, t)), manager=mgr)
    assert path == mgr.folder_for("tiny_clip") / "open_clip_model.safetensors"
    assert path.read_bytes() == data
    assert calls and calls[-1][0] == len(data)
    assert mgr.status("tiny_clip").state == "present"


def test_clip_download_cancel_through_huggingface_hub(env, file_server, monkeypatch):
    from car_desktop.engine.cancel import CancelToken
    from car_desktop.engine.errors import Cancelled

    # huggingface_hub reports in 10 MB chunks: cancel is honoured at the next chunk.
    mgr = _hf_env(env, file_server, monkeypatch, tiny_safetensors(8_000_000))
    token = CancelToken()
    seen = []

    def progress(done, total):
        seen.append(done)
        if done:
            token.cancel()

    with pytest.raises(Cancelled):
        mgr.download("tiny_clip", progress=progress, cancel=token)
    assert not mgr.download_target("tiny_clip").exists()
    assert mgr.status("tiny_clip").state == "missing"


def test_manifest_names_cannot_place_files_outside_the_cache(tmp_path):
    from car_desktop.engine.errors import ConfigError

    good = {"kind": "sam", "filename": "w.pth", "url": "https://example.com/w.pth"}
    for name, entry in (("../../evil", good), ("ok", {**good, "filename": "../../.bashrc"}),
                        ("ok", {**good, "filename": "/etc/passwd"}), ("ok", {**good, "alt_filenames": ["a/b.pth"]}),
                        (".hidden", good), ("ok", {**good, "filename": "w\x00.pth"})):
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"models": {name: entry}}))
        with pytest.raises(ConfigError, match="not a plain file name"):
            load_manifest(path)
    spec = ModelSpec(name="../escape", kind="sam", title="t", filename="w.pth", url="https://example.com/w.pth")
    mgr = ModelManager(tmp_path / "cache", manifest={"x": spec}, config_dir=tmp_path / "config")
    with pytest.raises(ConfigError, match="outside"):
        mgr.download_target("x")


def test_models_use_accepts_only_a_checkpoint_of_the_right_kind(env, capsys):
    import torch

    from car_desktop.engine.clip_models import load_test_models
    from car_desktop.engine.sam_models import build_tiny_sam

    sam_file, clip_file = env / "tiny_sam.pth", env / "tiny_clip.pt"
    torch.save(build_tiny_sam().state_dict(), sam_file)
    torch.save(load_test_models("cpu", "fp32")[0].model.state_dict(), clip_file)
    text_file = env / "passwd"
    text_file.write_text("root:x:0:0:root:/root:/bin/bash\n")
    pickle_file = env / "notes.pkl"
    pickle_file.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94.")
    config = env / "config" / "local_models.json"
    for file, name, words in ((text_file, "sam_vit_b", "not a model checkpoint"),
                              (clip_file, "sam_vit_b", "not of a SAM model"),
                              (sam_file, "clip_vit_b_16", "not of a CLIP model"),
                              (pickle_file, "sam_vit_b", "not of a SAM model"),
                              (env, "sam_vit_b", "is not a file")):
        before = config.read_bytes() if config.exists() else None
        assert main(["models", "use", name, str(file)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
        assert (config.read_bytes() if config.exists() else None) == before
    assert main(["models", "use", "vit_b", str(sam_file)]) == 0
    assert main(["models", "use", "clip_vit_b_16", str(clip_file)]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sam_vit_b"]["state"] == "present" and rows["clip_vit_b_16"]["state"] == "present"
