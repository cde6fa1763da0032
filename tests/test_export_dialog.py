"""The export dialog's "Keep categories without annotations" reaches the exporter (the CLI's
--keep-empty-categories): the empty category is in the JSON only when it is checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from car_desktop.ui.export_dialog import CocoExportDialog


@pytest.fixture
def win(qtbot, tmp_path, data_dir):
    from fakes import window_on_photo

    w = window_on_photo(qtbot, tmp_path, data_dir)
    m = np.zeros((48, 64), bool)
    m[5:20, 5:30] = True
    w.annotator.add_layer("cat", m)
    w.project.get_or_create_category("unicorn")      # a concept with no mask
    yield w
    w.close()


@pytest.mark.parametrize("keep", [False, True])
def test_keep_empty_categories_checkbox(win, qtbot, tmp_path, monkeypatch, keep):
    out = tmp_path / f"out-{keep}.json"

    def fake_exec(dialog: CocoExportDialog) -> int:
        assert not dialog.keep_empty.isChecked()          # off by default: ids and lists stay as they were
        dialog.path.setText(str(out))
        dialog.keep_empty.setChecked(keep)
        return 1

    monkeypatch.setattr(CocoExportDialog, "exec", fake_exec)
    with qtbot.waitSignal(win.transfers.done, timeout=10000):
        win.transfers.ask_export_coco(win.project, win.image_id)
    names = {c["name"] for c in json.loads(out.read_text())["categories"]}
    assert "cat" in names
    assert ("unicorn" in names) == keep


def test_cli_has_the_same_option():
    import argparse

    from car_desktop.cli import project as cli_project

    parser = argparse.ArgumentParser()
    cli_project.register(parser.add_subparsers())
    args = parser.parse_args(["export", "p.cardb", "--coco", "o.json", "--keep-empty-categories"])
    assert args.keep_empty_categories is True
