"""The Models dialog shows the same download facts as `car-desktop models list` (file name, URL, folder,
size), copies them, and imports nothing that pulls in torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

from PySide6.QtWidgets import QApplication

from car_desktop.cli import models as cli_models
from car_desktop.engine.model_facts import facts_text, model_facts, size_text
from car_desktop.engine.model_manager import ModelManager
from car_desktop.ui.models_dialog import ModelsDialog
from car_desktop.ui.workers import JobRunner


def _manager(tmp_path) -> ModelManager:
    return ModelManager(tmp_path / "cache", config_dir=tmp_path / "config")


def test_size_text():
    assert size_text(375_042_383) == "375.0 MB"
    assert size_text(None, 599) == "about 599 MB"
    assert size_text(None) == "?"


def test_dialog_facts_equal_models_list(qtbot, tmp_path, monkeypatch, capsys):
    mgr = _manager(tmp_path)
    facts = model_facts(mgr)
    clip = next(f for f in facts if f.name == "clip_vit_b_16")
    assert clip.file_name == "open_clip_model.safetensors" and clip.size.startswith("about ")
    assert clip.url.startswith("https://huggingface.co/") and clip.folder == mgr.folder_for("clip_vit_b_16")
    runner = JobRunner()
    dialog = ModelsDialog(mgr, runner)
    qtbot.addWidget(dialog)
    assert dialog.facts_text() == facts_text(facts)
    monkeypatch.setattr(cli_models, "_manager", lambda: mgr)
    assert cli_models.cmd_list(argparse.Namespace(json=False)) == 0
    printed = capsys.readouterr().out
    assert facts_text(facts) in printed
    for row, fact in enumerate(facts):
        assert dialog.table.item(row, 1).text() == fact.size
        assert dialog.table.item(row, 3).text() == fact.file_name
        assert dialog.table.item(row, 4).text() == str(fact.folder)
        table_row = next(line for line in printed.splitlines() if line.startswith(fact.name + " "))
        assert f"  {fact.size}  " in table_row          # the table's SIZE column says the same
    dialog.table.selectRow(0)
    assert facts[0].url in dialog.detail.text() and str(facts[0].folder) in dialog.detail.text()
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == facts_text(facts)
    runner.shutdown(1000)


def test_dialog_imports_no_torch():
    code = ("import sys; import car_desktop.ui.models_dialog, car_desktop.engine.model_manager, "
            "car_desktop.engine.model_facts; print(sorted(m for m in ('torch', 'open_clip', 'segment_anything') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.stdout.strip() == "[]"
