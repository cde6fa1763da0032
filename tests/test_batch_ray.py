"""``car-desktop batch --ray`` on a local Ray started by this module (2 CPUs), tiny test models, SAM off.

A folder of 10 small images is labelled by the local batch (the reference); ``--ray`` must give the same
project (images, statuses, masks pixel for pixel, scores within 1e-6, run keys), skip everything on a
rerun and never touch reviewed or edited images. Faults: a worker process killed in the middle of an
image, and a worker whose engine raises once, still end with every image saved exactly once; a driver
killed with SIGKILL (or stopped with Ctrl+C) and rerun ends equal to the uninterrupted run. Without Ray
the flag says how to install it. Ray is shut down when the module ends, so nothing is left running.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from car_desktop import autolabel, autolabel_ray
from car_desktop.annotations import Project
from car_desktop.autolabel import RUN_KEY_SETTING, AutoLabelJob, add_folder
from car_desktop.cli import main
from car_desktop.compact_result import compact_result, expand_result
from car_desktop.engine.concepts import Concept
from car_desktop.engine.config import preset
from car_desktop.engine.results import (
    CaRResult,
    ConceptResult,
    ConceptStatus,
    StepTrace,
)
from test_batch_cli import CONCEPTS, done_count, make_image

ROOT = Path(__file__).resolve().parent.parent


def batch_args(images: Path, project: Path, *extra: str) -> list[str]:
    return ["--test-models", "batch", str(images), "--concepts", CONCEPTS, "--project", str(project),
            "--sam", "off", *extra]


def state(project_path: Path) -> dict[str, tuple[str, str | None, list[tuple[str, float, np.ndarray]]]]:
    """{rel_path: (status, run key, [(category, score, mask)] sorted by category and score)}."""
    out = {}
    with Project.open(project_path) as proj:
        names = {c.id: c.name for c in proj.list_categories()}
        for rec in proj.list_images():
            anns = sorted(((names[a.category_id], a.score, proj.get_mask(a.id)) for a in proj.list_annotations(rec.id)),
                          key=lambda t: (t[0], t[1] or 0.0))
            out[rec.rel_path] = (rec.status, proj.get_setting(f"{RUN_KEY_SETTING}{rec.id}"), anns)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for rel, (status, key, anns) in want.items():
        g_status, g_key, g_anns = got[rel]
        assert (g_status, g_key) == (status, key), rel
        assert [a[0] for a in g_anns] == [a[0] for a in anns], rel
        for (name, score, mask), (_, g_score, g_mask) in zip(anns, g_anns):
            assert (g_score is None) == (score is None), (rel, name)
            assert score is None or abs(g_score - score) <= 1e-6, (rel, name)
            assert np.array_equal(g_mask, mask), (rel, name)


@contextmanager
def local_ray(clear_env: Sequence[str] = ()) -> Iterator[str]:
    """A local Ray of 2 CPUs, shut down afterwards (the batch uses a Ray already started in its process);
    its processes do not inherit the variables in ``clear_env``."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        for name in clear_env:
            mp.delenv(name, raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
                 logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_address():
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    f10 = tmp_path_factory.mktemp("ray") / "imgs"
    (f10 / "sub").mkdir(parents=True)
    for i in range(10):
        rel = f"sub/im{i:02d}.png" if i % 5 == 4 else f"im{i:02d}.png"
        Image.fromarray(make_image(i)).save(f10 / rel)
    return f10


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """The project the local batch makes of the folder, computed with one torch thread like each worker
    actor (one CPU each): a different thread count reorders float sums, which can move a pixel at the
    edge of the tiny models' near-empty masks."""
    import torch

    project = tmp_path_factory.mktemp("ref") / "local.cardb"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(batch_args(folder, project)) == 0
    finally:
        torch.set_num_threads(threads)
    return state(project)


class _Faulty:
    """A CaRPipeline stand-in for the fault tests: the 3rd image the workers of a run segment (counted
    across worker processes in ``counter_dir``) kills its worker process, the 6th raises; each only once,
    whatever Ray retries."""

    FAULTS = ((3, "kill"), (6, "raise"))

    def __init__(self, config, *, test_models: bool, counter_dir: str) -> None:
        from car_desktop.engine.pipeline import CaRPipeline

        self.inner = CaRPipeline(config, test_models=test_models)
        self.counter_dir = Path(counter_dir)

    def load_models(self) -> None:
        self.inner.load_models()

    def run(self, image, concepts, **kwargs):
        calls = self.counter_dir / "calls"
        with open(calls, "a") as fh:
            fh.write("x")
        count = calls.stat().st_size
        for at, fault in self.FAULTS:
            if count >= at and self._first(fault):
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError("injected fault")
        return self.inner.run(image, concepts, **kwargs)

    def _first(self, fault: str) -> bool:
        try:
            os.close(os.open(self.counter_dir / f"{fault}-done", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def _faulty_factory(counter_dir: Path):
    def factory(config, *, test_models: bool):
        return _Faulty(config, test_models=test_models, counter_dir=str(counter_dir))
    return factory


def _run_faulty(folder: Path, project_path: Path, factory, monkeypatch) -> tuple[object, Counter]:
    """run_autolabel_ray with ``factory``; returns the report and how often each image id was saved."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module
    saves: Counter = Counter()
    real = autolabel.save_car_result

    def counting(project, image_id, *args, **kwargs):
        saves[image_id] += 1
        return real(project, image_id, *args, **kwargs)

    monkeypatch.setattr(autolabel_ray, "save_car_result", counting)
    config = preset("objects", sam_mode="off", crf_in_subprocess=False)
    with Project.open(project_path) if project_path.exists() else Project.create(project_path, folder) as proj:
        ids, _ = add_folder(proj, folder)
        job = AutoLabelJob(CONCEPTS, config, image_ids=ids, test_models=True)
        report = autolabel_ray.run_autolabel_ray(proj, job, autolabel_ray.RayOptions(workers=2, cpus_per_worker=1),
                                                 pipeline_factory=factory)
    return report, saves


@pytest.mark.slow
def test_ray_batch_equals_local_batch_reruns_skip_and_reviewed_images_are_untouched(
        ray_address, folder, reference, tmp_path, capsys):
    project = tmp_path / "ray.cardb"
    capsys.readouterr()
    assert main(batch_args(folder, project, "--ray", "--workers", "2", "--cpus-per-worker", "1")) == 0
    out = capsys.readouterr()
    assert "labelled 10, skipped 0, failed 0" in out.out and "10/10" in out.err
    assert_same(state(project), reference)
    assert sum(len(anns) for _, _, anns in reference.values()) > 0

    assert main(batch_args(folder, project, "--ray")) == 0
    assert "labelled 0, skipped 10" in capsys.readouterr().out
    assert_same(state(project), reference)

    with Project.open(project) as proj:
        reviewed, edited = proj.find_image("im00.png"), proj.find_image("im01.png")
        proj.set_image_status(reviewed.id, "reviewed")
        proj.add_annotation(edited.id, proj.get_or_create_category("cat").id, np.ones((64, 80), bool))
    before = state(project)
    code = main(["--test-models", "batch", str(folder), "--concepts", "tree, road", "--project", str(project),
                 "--sam", "off", "--ray", "--workers", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "labelled 8, skipped 2" in out and "reviewed by a person" in out and "made, edited" in out
    after = state(project)
    assert_same({k: after[k] for k in ("im00.png", "im01.png")}, {k: before[k] for k in ("im00.png", "im01.png")})
    assert {name for k, (_, _, anns) in after.items() if k not in ("im00.png", "im01.png")
            for name, _, _ in anns} <= {"tree", "road"}


@pytest.mark.slow
def test_unreadable_files_are_listed_and_exit_1(ray_address, folder, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for name, to in (("im00.png", "im00.png"), ("im01.png", "_odd #1 ü%20,name.png")):
        shutil.copy(folder / name, images / to)  # the answer for an odd file name finds its image
    (images / "empty.jpg").write_bytes(b"")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    jpeg = tmp_path / "whole.jpg"
    Image.fromarray(make_image(30)).save(jpeg, quality=90)
    (images / "truncated.jpg").write_bytes(jpeg.read_bytes()[:-300])  # header readable: fails on the worker
    project = tmp_path / "p.cardb"
    assert main(batch_args(images, project, "--ray", "--workers", "1")) == 1
    out = capsys.readouterr().out
    assert "labelled 2" in out and "failed 3" in out
    failures = dict(line.strip().split(": ", 1) for line in out.split("failures:")[1].strip().splitlines())
    assert set(failures) == {"empty.jpg", "corrupt.png", "truncated.jpg"}
    assert "0 bytes" in failures["empty.jpg"] and "corrupt or truncated" in failures["truncated.jpg"]
    assert str(tmp_path) not in failures["truncated.jpg"]  # no worker temporary path in the reason
    assert {k: s for k, (s, _, _) in state(project).items()} == {"im00.png": "auto", "_odd #1 ü%20,name.png": "auto",
                                                                 "truncated.jpg": "new"}
    with Project.open(project) as proj:  # the project's failure list, as the local batch keeps it
        assert ("truncated.jpg", "label") in {(f.rel_path, f.stage) for f in proj.list_failures()}
        assert proj.claim_image(proj.find_image("truncated.jpg").id, "another run") is None  # claims released
    # --skip-failed leaves the unchanged failures alone; nothing is left to do.
    assert main(batch_args(images, project, "--ray", "--workers", "1", "--skip-failed")) == 0
    out = capsys.readouterr().out
    assert "labelled 0" in out and "failed 0" in out


@pytest.mark.slow
def test_worker_killed_or_raising_every_image_saved_exactly_once(ray_address, folder, reference, tmp_path,
                                                                monkeypatch):
    project = tmp_path / "p.cardb"
    report, saves = _run_faulty(folder, project, _faulty_factory(tmp_path), monkeypatch)
    # A worker process died in the middle of an image: Ray restarted it and that image was redone.
    assert (tmp_path / "kill-done").exists() and (tmp_path / "raise-done").exists()
    assert not report.stopped and report.done == 9 and len(report.failed) == 1
    # An engine error is that image's failure, as in the local batch; the rerun labels it.
    assert "engine error: RuntimeError: injected fault" in report.failed[0].reason
    failed_rel = report.failed[0].path
    assert state(project)[failed_rel][:2] == ("new", None)
    report2, saves2 = _run_faulty(folder, project, _faulty_factory(tmp_path), monkeypatch)
    assert report2.done == 1 and report2.skipped == 9 and not report2.failed
    assert sorted(saves.values()) == [1] * 9 and sorted((saves + saves2).values()) == [1] * 10
    assert_same(state(project), reference)


def _driver(folder: Path, project: Path, address: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "car_desktop", *batch_args(folder, project, "--ray", address,
                                                                             "--workers", "1")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt_after_two(proc: subprocess.Popen, project: Path, sig: int) -> tuple[str, str]:
    try:
        deadline = time.monotonic() + 240
        while done_count(project) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the batch finished (or died) before it could be interrupted"
        proc.send_signal(sig)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_driver_killed_then_rerun_equals_the_uninterrupted_run(ray_address, folder, reference, tmp_path, capsys):
    project = tmp_path / "p.cardb"
    proc = _driver(folder, project, ray_address)
    _interrupt_after_two(proc, project, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done = done_count(project)
    assert 2 <= done < 10
    partial = state(project)
    assert sum(s == "auto" and key is not None for s, key, _ in partial.values()) == done  # all or nothing
    assert main(batch_args(folder, project, "--ray", "--workers", "1")) == 0
    assert f"labelled {10 - done}, skipped {done}" in capsys.readouterr().out
    assert_same(state(project), reference)


@pytest.mark.slow
def test_ctrl_c_stops_with_everything_saved_and_resumes(ray_address, folder, reference, tmp_path, capsys):
    project = tmp_path / "p.cardb"
    proc = _driver(folder, project, ray_address)
    out, err = _interrupt_after_two(proc, project, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "stopping after the current image" in err and "Run the same command again" in out
    done = done_count(project)
    assert 2 <= done < 10 and f"labelled {done}," in out
    assert main(batch_args(folder, project, "--ray", "--workers", "1")) == 0
    assert f"labelled {10 - done}, skipped {done}" in capsys.readouterr().out
    assert_same(state(project), reference)


def test_without_ray_the_flag_says_how_to_install_it(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as if not installed
    project = tmp_path / "p.cardb"
    assert main(batch_args(folder, project, "--ray")) == 2
    err = capsys.readouterr().err
    assert "pip install 'car-desktop[ray]'" in err
    assert not project.exists()


def test_ray_option_errors_are_clear(folder, tmp_path, capsys):
    project = tmp_path / "p.cardb"
    cases = [(("--ray", "--workers", "0"), "--workers must be at least 1"),
             (("--workers", "2"), "--workers needs --ray"),
             (("--ray", "some where"), "is not a Ray address"),
             (("--ray", "--cpus-per-worker", "0"), "--cpus-per-worker must be above 0")]
    for extra, message in cases:
        assert main(batch_args(folder, project, *extra)) == 2
        assert message in capsys.readouterr().err
    assert not project.exists()


def test_pool_shape_follows_the_cluster():
    shape = autolabel_ray.pool_shape
    opts = autolabel_ray.RayOptions
    assert shape({"CPU": 16, "GPU": 4}, opts()) == (4, 1.0, 1.0)
    assert shape({"CPU": 16, "GPU": 4}, opts(gpus_per_worker=0.5)) == (8, 0.5, 1.0)
    assert shape({"CPU": 8}, opts()) == (1, 0.0, 1.0)
    assert shape({"CPU": 8}, opts(workers=3, cpus_per_worker=2)) == (3, 0.0, 2.0)
    with pytest.raises(autolabel_ray.CaRDesktopError, match="one worker needs 1 GPU"):
        shape({"CPU": 8}, opts(gpus_per_worker=1))


def test_compact_result_round_trip_keeps_masks_and_scores_exactly():
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.6, np.zeros((37, 53), bool), np.ones((37, 53), bool)]
    statuses = [ConceptStatus.KEPT, ConceptStatus.REMOVED, ConceptStatus.KEPT]
    concepts = [ConceptResult(i, Concept((f"c{i}", f"d{i}")), m, float(np.float32(0.1 + i / 3)), s,
                              removed_at_step=2 if s is ConceptStatus.REMOVED else None,
                              removed_score=0.25 if s is ConceptStatus.REMOVED else None, sam_accepted=i == 2,
                              sam_iou=0.875 if i == 2 else None)
                for i, (m, s) in enumerate(zip(masks, statuses))]
    result = CaRResult(concepts, [StepTrace(1, [0, 1, 2], {0: 0.5, 1: 0.1, 2: 0.4}, [0, 2])],
                       label_map=np.zeros((37, 53), np.int32), image_size=(37, 53), timings={"crf": 0.5},
                       test_models=True, model_names={"proposal": "p"})
    import json

    text = json.dumps(compact_result(result))
    assert len(text) < masks[0].size  # compact: smaller than one byte per pixel even for a noisy mask
    back = expand_result(json.loads(text))
    assert back.image_size == (37, 53) and back.test_models and back.model_names == {"proposal": "p"}
    assert back.steps[0].scores == {0: 0.5, 1: 0.1, 2: 0.4} and back.steps[0].kept == [0, 2]
    for a, b in zip(result.concepts, back.concepts):
        assert b.concept == a.concept and b.label == f"c{a.index} | d{a.index}"
        assert np.array_equal(a.mask, b.mask) and b.mask.dtype == bool
        assert (a.score, a.status, a.removed_at_step, a.removed_score, a.sam_accepted, a.sam_iou) == \
               (b.score, b.status, b.removed_at_step, b.removed_score, b.sam_accepted, b.sam_iou)


@pytest.mark.slow
def test_a_file_gone_after_the_plan_is_listed_as_failed(ray_address, folder, reference, tmp_path):
    images = tmp_path / "imgs"
    shutil.copytree(folder, images)
    config = preset("objects", sam_mode="off", crf_in_subprocess=False)

    def delete_one(p) -> None:
        if p.event == "planned":
            (images / "im03.png").unlink()  # after the plan, before the workers read it

    with Project.create(tmp_path / "p.cardb", images) as proj:
        ids, _ = add_folder(proj, images)
        job = AutoLabelJob(CONCEPTS, config, image_ids=ids, test_models=True)
        report = autolabel_ray.run_autolabel_ray(proj, job, autolabel_ray.RayOptions(workers=1), progress=delete_one)
        # Every file gone: no Ray work at all, each listed.
        gone = proj.find_image("im05.png").id
        (images / "im05.png").unlink()
        again = autolabel_ray.run_autolabel_ray(proj, AutoLabelJob(CONCEPTS, config, image_ids=[gone], overwrite=True,
                                                                   test_models=True), autolabel_ray.RayOptions())
    assert again.done == 0 and [f.path for f in again.failed] == ["im05.png"]
    assert report.done == 9 and [f.path for f in report.failed] == ["im03.png"]
    assert "could not be read" in report.failed[0].reason
    got = state(tmp_path / "p.cardb")
    assert got.pop("im03.png")[:2] == ("new", None)
    assert_same(got, {k: v for k, v in reference.items() if k != "im03.png"})
