"""Issue 13, "exit codes and messages": every documented exit code is produced by the case it
documents (a crash is 3 with a crash log, never 1); a mistyped sub-command is refused with a
suggestion and never opens the window; each warning is printed once; ";" is part of a concept; a
newline or NUL in a category name cannot break labels.txt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import car_desktop.app
from car_desktop.annotations import Project, export_label_pngs, import_coco
from car_desktop.cli import EXIT_CODES, main
from car_desktop.cli import project as cli_project
from car_desktop.cli.batch import EXIT_CODES as BATCH_EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gui_calls(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(car_desktop.app, "launch_gui", lambda **kw: calls.append(kw) or 0)
    return calls


def test_every_documented_exit_code_is_produced_by_its_case(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAR_DESKTOP_DATA", str(tmp_path / "data"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(imgs / "a.png")
    coco = tmp_path / "c.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../x.png"}]}')
    produced: dict[int, str] = {}

    produced[main(["import", str(tmp_path / "ok.cardb"), str(tmp_path / "c.json"), "--images", str(imgs)])] = "1"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.png"}]}')
    produced[main(["import", str(tmp_path / "ok.cardb"), str(coco), "--images", str(imgs)])] = "0"
    produced[main(["export", str(tmp_path / "missing.cardb"), "--coco", str(tmp_path / "o.json")])] = "2"
    assert "does not exist" in capsys.readouterr().err

    def crash(_args):
        raise ValueError("a bug")

    monkeypatch.setattr(cli_project, "_failures", crash)
    produced[main(["failures", str(tmp_path / "ok.cardb")])] = "3"
    err = capsys.readouterr().err
    assert "internal error, please report it: ValueError: a bug" in err
    log = Path(re.search(r"written to (\S+)", err).group(1))
    assert log.is_file() and "Traceback" in log.read_text() and "Traceback" not in err

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_project, "_failures", interrupted)
    produced[main(["failures", str(tmp_path / "ok.cardb")])] = "130"
    assert set(produced) == {0, 1, 2, 3, 130}
    def documented(text: str) -> set[int]:  # "exit codes: 0 ...; 1 ...; 2 (...); ..."
        return {int(c) for c in re.findall(r"(?:: |; )(\d+) ", text)}

    assert documented(EXIT_CODES) == set(produced) == documented(BATCH_EXIT_CODES)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "3 internal error" in capsys.readouterr().out


def test_a_crash_without_a_writable_log_folder_still_shows_the_traceback(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").write_text("a file where the log folder would be")
    monkeypatch.setenv("CAR_DESKTOP_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(cli_project, "_failures", lambda _a: 1 / 0)
    assert main(["failures", str(tmp_path / "x.cardb")]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err and "ZeroDivisionError" in err


def test_a_mistyped_command_is_refused_and_never_opens_the_window(tmp_path, gui_calls, capsys):
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["segmnt", str(image)]) == 2
    assert "unknown command 'segmnt' (did you mean 'segment'?)" in capsys.readouterr().err
    assert main(["--test-models", "expotr", "p.cardb"]) == 2
    assert "did you mean 'export'?" in capsys.readouterr().err
    assert main(["zzz"]) == 2
    assert "commands: segment" in capsys.readouterr().err
    assert gui_calls == []
    assert main([]) == 0 and main([str(image)]) == 0 and main(["--test-models", str(tmp_path)]) == 0
    assert [c["argv"] for c in gui_calls] == [[], [str(image)], [str(tmp_path)]]


@pytest.mark.slow
def test_warnings_are_printed_once_and_a_semicolon_is_text(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(imgs / "a.png")
    concepts = ", ".join(["cat"] * 50 + ["x'); DROP TABLE images;--"])
    project = tmp_path / "p.cardb"
    proc = subprocess.run([sys.executable, "-m", "car_desktop", "--test-models", "batch", str(imgs), "--concepts",
                           concepts, "--project", str(project), "--sam", "off"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len([line for line in lines if "appears more than once" in line]) == 1
    assert "(50 times)" in proc.stderr
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == len(set(warnings))
    with Project.open(project) as p:
        assert [c.name for c in p.list_categories()] == ["cat", "x'); DROP TABLE images;--"]
        assert p.count_images() == 1


def test_newlines_and_nul_in_category_names_cannot_break_labels_txt(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (20, 10)).save(imgs / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "wet\nfloor"}, {"id": 2, "name": "rust\x00y"},
                           {"id": 3, "name": "a\r\n3 injected"}],
            "annotations": [{"id": c, "image_id": 1, "category_id": c, "segmentation": [[c, 1, c + 4, 1, c + 4, 8]]}
                            for c in (1, 2, 3)]}
    with Project.create(tmp_path / "p.cardb", imgs) as p:
        import_coco(p, coco, imgs)
        assert [c.name for c in p.list_categories()] == ["wet floor", "rust y", "a 3 injected"]
        export_label_pngs(p, tmp_path / "labels")
    lines = (tmp_path / "labels" / "labels.txt").read_text(encoding="utf-8").split("\n")
    assert lines == ["0 background", "1 wet floor", "2 rust y", "3 a 3 injected", ""]
