"""Canvas, layers, tools, concept bar/panel, status bar, the file list with clips and the worker runner, offscreen."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from car_desktop.annotations import mask_ops
from car_desktop.annotations.models import Rect
from car_desktop.engine.errors import ImageLoadError
from car_desktop.engine.results import Progress
from car_desktop.ui.canvas import Canvas
from car_desktop.ui.concept_bar import ConceptBar
from car_desktop.ui.concept_panel import ConceptPanel
from car_desktop.ui.layers import LayerStack, MaskLayer
from car_desktop.ui.status import JobStatusBar, describe_progress
from car_desktop.ui.tools import BrushTool, PolygonTool, SamClickTool
from car_desktop.ui.video_file_list import MediaFileList
from car_desktop.ui.workers import JobRunner
from fakes import FakeHost


@pytest.fixture
def canvas_setup(qtbot, two_colour_image):
    stack = LayerStack()
    canvas = Canvas(stack)
    qtbot.addWidget(canvas)
    canvas.resize(400, 300)
    canvas.show()
    canvas.set_image(two_colour_image)
    stack.set_image_size(96, 128)
    mask = np.zeros((96, 128), bool)
    mask[30:60, 16:46] = True
    stack.add(MaskLayer(stack.new_id(), "red square", (255, 0, 0), mask, score=0.9))
    return stack, canvas


def test_overlay_composites_visible_layers(canvas_setup):
    stack, canvas = canvas_setup
    over = canvas.overlay_rgba()
    assert tuple(over[40, 20]) == (255, 0, 0, 255)
    assert over[5, 5, 3] == 0
    layer = stack.layers()[0]
    stack.update(layer.id, visible=False)
    assert canvas.overlay_rgba()[40, 20, 3] == 0
    stack.update(layer.id, visible=True, color=(0, 0, 255))
    assert tuple(canvas.overlay_rgba()[40, 20]) == (0, 0, 255, 255)
    canvas.set_opacity(0.3)
    assert canvas.opacity() == pytest.approx(0.3)


def test_partial_update_only_touches_rect(canvas_setup):
    stack, canvas = canvas_setup
    layer = stack.layers()[0]
    canvas.overlay_rgba()
    layer.mask[0:5, 0:5] = True
    layer.mask[80, 100] = True          # changed too, but outside the announced rectangle
    stack.touched(layer.id, Rect(0, 0, 5, 5))
    over = canvas.overlay_rgba()
    assert over[2, 2, 3] == 255 and over[40, 20, 3] == 255
    assert over[80, 100, 3] == 0        # only the announced rectangle was composited again


def test_zoom_fit_and_actual_size(canvas_setup):
    _stack, canvas = canvas_setup
    canvas.actual_size()
    assert canvas.zoom() == pytest.approx(1.0)
    canvas.zoom_by(2.0)
    assert canvas.zoom() == pytest.approx(2.0)
    canvas.fit()
    assert canvas.zoom() > 2.0  # 128 px wide image in a 400 px view


def test_wheel_zooms_around_cursor(canvas_setup, qtbot):
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    _stack, canvas = canvas_setup
    canvas.actual_size()
    canvas.zoom_by(4.0)
    pos = QPoint(100, 80)
    before = canvas.mapToScene(pos)
    ev = QWheelEvent(QPointF(pos), QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0), QPoint(0, 120),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), ev)
    assert canvas.zoom() == pytest.approx(5.0)
    after = canvas.mapToScene(pos)
    assert abs(after.x() - before.x()) < 1.0 and abs(after.y() - before.y()) < 1.0


def test_click_selects_layer_and_outline(canvas_setup, qtbot):
    stack, canvas = canvas_setup
    view_pos = canvas.mapFromScene(QPointF(30, 45))
    qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos)
    assert stack.selected_id == stack.layers()[0].id
    qtbot.waitUntil(lambda: not canvas._outline_item.path().isEmpty(), timeout=1000)
    r = canvas._outline_item.path().boundingRect()
    assert 15 <= r.left() <= 17.5 and 44 <= r.right() <= 46
    qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(100, 10)))
    assert stack.selected_id == -1


def test_hover_reports_concept(canvas_setup, qtbot):
    _stack, canvas = canvas_setup
    seen = []
    canvas.hovered.connect(seen.append)
    qtbot.mouseMove(canvas.viewport(), canvas.mapFromScene(QPointF(30, 45)))
    qtbot.waitUntil(lambda: bool(seen), timeout=1000)
    assert seen[-1].startswith("red square")


def test_brush_and_eraser_strokes(canvas_setup, qtbot):
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    layer = stack.layers()[0]
    stack.select(layer.id)
    brush = BrushTool(host, radius=3)
    canvas.set_tool(brush)
    vp = canvas.viewport()
    start, end = canvas.mapFromScene(QPointF(80.5, 10.5)), canvas.mapFromScene(QPointF(100.5, 10.5))
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(vp, end)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=end)
    assert len(host.commits) == 1
    _lid, edit, label = host.commits[0]
    assert label == "Brush" and not edit.before.any() and edit.after.any()
    assert layer.mask[10, 90] and layer.mask[10, 80] and not layer.mask[10, 110]
    assert canvas.overlay_rgba()[10, 90, 3] == 255
    # Bracket keys change the size.
    qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert brush.radius > 3
    eraser = BrushTool(host, erase=True, radius=4)
    canvas.set_tool(eraser)
    p = canvas.mapFromScene(QPointF(30.5, 45.5))
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=p)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=p)
    assert not layer.mask[45, 30] and layer.mask[45, 40]
    assert host.commits[-1][2] == "Eraser"


def test_brush_without_selection_asks_for_one(canvas_setup, qtbot):
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    canvas.set_tool(BrushTool(host))
    qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(80, 10)))
    assert host.messages and not host.commits


class _RecordingBrush(BrushTool):
    """A brush that remembers the image points it received, to recompute the stroke with mask_ops."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, float]] = []

    def press(self, e):
        self.seen.append((e.x, e.y))
        return super().press(e)

    def move(self, e):
        if self._stroke is not None:
            self.seen.append((e.x, e.y))
        return super().move(e)


class _RecordingPolygon(PolygonTool):
    def close_polygon(self) -> None:
        self.closed = list(self.points)
        super().close_polygon()


@pytest.mark.parametrize("erase", [False, True])
def test_gui_brush_stroke_equals_mask_ops(canvas_setup, qtbot, erase):
    """A stroke painted segment by segment through the tool (mouse events, with qtbot) gives exactly
    the pixels of ``mask_ops.paint_stroke`` on the same points, also where it leaves the image."""
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    layer = stack.layers()[0]
    stack.select(layer.id)
    original = layer.mask.copy()
    brush = _RecordingBrush(host, erase=erase, radius=5)
    canvas.set_tool(brush)
    vp = canvas.viewport()
    path = [(20.3, 35.7), (33.9, 41.2), (47.5, 52.8), (60.1, 50.4), (2.2, 93.6), (-3.0, 98.0)]
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(*path[0])))
    for x, y in path[1:]:
        qtbot.mouseMove(vp, canvas.mapFromScene(QPointF(x, y)))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(*path[-1])))
    assert len(brush.seen) == len(path)
    expected, edit = mask_ops.paint_stroke(original, brush.seen, 5, value=not erase)
    assert not edit.is_empty and np.array_equal(layer.mask, expected)
    assert len(host.commits) == 1 and host.commits[0][1].rect == edit.rect   # one tight undo step


@pytest.mark.parametrize("subtract", [False, True])
def test_gui_polygon_equals_mask_ops(canvas_setup, qtbot, subtract):
    """A polygon clicked through the tool gives exactly the pixels of ``mask_ops.add_polygon`` /
    ``subtract_polygon`` (pycocotools' pixel-edge convention) on the same vertices."""
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    layer = stack.layers()[0]
    stack.select(layer.id)
    original = layer.mask.copy()
    tool = _RecordingPolygon(host, subtract=subtract)
    canvas.set_tool(tool)
    vp = canvas.viewport()
    for x, y in [(10.2, 20.7), (52.4, 28.1), (40.9, 70.3), (25.5, 44.4), (5.1, 66.6)]:
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(x, y)))
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    op = mask_ops.subtract_polygon if subtract else mask_ops.add_polygon
    expected, edit = op(original, tool.closed)
    assert not edit.is_empty and np.array_equal(layer.mask, expected)
    assert host.commits[-1][1].rect == edit.rect


def test_segmented_stroke_equals_whole_stroke():
    """What the live brush relies on: painting a polyline segment by segment in place (``paint_into``)
    covers the same pixels as painting it at once, at any radius, across the image border."""
    rng = np.random.default_rng(5)
    for _ in range(30):
        pts = [tuple(p) for p in rng.uniform(-8, 70, (int(rng.integers(1, 7)), 2))]
        radius = float(rng.uniform(0.4, 9))
        whole, _ = mask_ops.paint_stroke(np.zeros((60, 64), bool), pts, radius)
        live = np.zeros((60, 64), bool)
        for a, b in zip([pts[0], *pts[:-1]], pts):
            mask_ops.paint_into(live, [a, b], radius)
        assert np.array_equal(live, whole)


def test_polygon_tool_add_and_subtract(canvas_setup, qtbot):
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    layer = stack.layers()[0]
    stack.select(layer.id)
    tool = PolygonTool(host)
    canvas.set_tool(tool)
    vp = canvas.viewport()
    for x, y in [(70, 70), (90, 70), (90, 90), (70, 90)]:
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(x, y)))
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert layer.mask[80, 80] and host.commits[-1][2] == "Polygon add"
    sub = PolygonTool(host, subtract=True)
    canvas.set_tool(sub)
    for x, y in [(10, 25), (30, 25), (30, 65), (10, 65)]:
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(x, y)))
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert not layer.mask[45, 20] and layer.mask[45, 40]
    # Esc abandons a polygon in progress.
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(100, 10)))
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert sub.points == []


def test_sam_click_tool(canvas_setup, qtbot):
    stack, canvas = canvas_setup
    host = FakeHost(stack)
    tool = SamClickTool(host)
    canvas.set_tool(tool)
    vp = canvas.viewport()
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(30, 40)))
    qtbot.mouseClick(vp, Qt.MouseButton.RightButton, pos=canvas.mapFromScene(QPointF(100, 40)))
    assert [r[1] for r in host.sam_requests] == [[1], [1, 0]]
    pts = host.sam_requests[-1][0]
    assert abs(pts[0][0] - 30) < 1 and abs(pts[1][0] - 100) < 1
    pred = np.zeros((96, 128), bool)
    pred[0:10, 0:10] = True
    tool.show_prediction(pred)
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert len(host.accepted) == 1 and host.accepted[0].sum() == 100
    assert tool.points == []
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=canvas.mapFromScene(QPointF(30, 40)))
    qtbot.keyClick(canvas, Qt.Key.Key_Escape)
    assert tool.points == [] and tool.preview is None


def test_space_drag_pans(canvas_setup, qtbot):
    _stack, canvas = canvas_setup
    canvas.actual_size()
    canvas.zoom_by(8.0)
    vp = canvas.viewport()
    h0 = canvas.horizontalScrollBar().value()
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=QPoint(200, 150))
    qtbot.mouseMove(vp, QPoint(150, 150))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=QPoint(150, 150))
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.horizontalScrollBar().value() != h0


def test_concept_panel_rows_and_requests(qtbot):
    stack = LayerStack()
    stack.set_image_size(10, 10)
    panel = ConceptPanel(stack)
    qtbot.addWidget(panel)
    kept = stack.add(MaskLayer(1, "cat", (255, 0, 0), np.ones((10, 10), bool), score=0.8, status="kept",
                               status_text="kept (score 0.80)"))
    stack.add(MaskLayer(2, "dog", (0, 255, 0), np.zeros((10, 10), bool), score=None, status="removed",
                        status_text="removed at step 2 (score 0.12)"))
    assert panel.tree.topLevelItemCount() == 2
    assert panel.tree.topLevelItem(1).text(2) == "removed at step 2 (score 0.12)"
    assert panel.tree.topLevelItem(0).text(1) == "0.80"
    seen = []
    panel.visibilityRequested.connect(lambda i, v: seen.append((i, v)))
    panel.tree.topLevelItem(0).setCheckState(0, Qt.CheckState.Unchecked)
    assert seen == [(kept.id, False)]
    panel.tree.setCurrentItem(panel.tree.topLevelItem(1))
    assert stack.selected_id == 2
    stack.remove(2)
    assert panel.tree.topLevelItemCount() == 1
    got = []
    panel.opacityChanged.connect(got.append)
    panel.opacity.setValue(70)
    assert got[-1] == pytest.approx(0.7)


def test_concept_bar_runs_and_validates(qtbot):
    bar = ConceptBar()
    qtbot.addWidget(bar)
    runs = []
    bar.runRequested.connect(lambda concepts, cfg: runs.append((concepts, cfg)))
    bar.edit.setFocus()
    bar.request_run()
    assert not runs and bar.error_label.text()
    bar.set_text("car | automobile, sky")
    bar.set_preset("scene")
    bar.theta.setValue(0.35)
    qtbot.keyClick(bar.edit, Qt.Key.Key_Return)
    assert len(runs) == 1
    concepts, cfg = runs[0]
    assert concepts.labels == ["car | automobile", "sky"]          # parsed once, here
    assert [c.text for c in concepts] == ["car, automobile", "sky"]
    assert cfg.preset == "scene" and cfg.theta == pytest.approx(0.35) and cfg.eta == pytest.approx(0.6)
    bar.set_recent(["a, b", "c"])
    bar.recent_menu.actions()[1].trigger()
    assert bar.text() == "c"


def test_describe_progress():
    assert describe_progress(Progress("proposals", 2, 0.5)) == ("proposals, step 2", 0.5)
    assert describe_progress((5, 10)) == ("5/10", 0.5)


def test_job_runner_delivers_and_drops_stale(qtbot):
    """Each job's result goes to its own callbacks only; a superseded job's result is never delivered."""
    runner = JobRunner()
    got: dict[str, list] = {"old": [], "new": [], "old cancelled": []}
    errors: list = []
    gate = threading.Event()

    def slow(progress, cancel):
        progress(Progress("proposals", 1, 0.5))
        gate.wait(5)
        return "old"

    runner.submit("car", slow, on_done=got["old"].append, on_cancelled=lambda: got["old cancelled"].append(1))
    runner.submit("car", lambda p, c: "new", on_done=got["new"].append)   # supersedes: the slow one is stale
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy(), timeout=5000)
    assert got == {"old": [], "new": ["new"], "old cancelled": [1]}

    runner.submit("car", lambda p, c: (_ for _ in ()).throw(ImageLoadError("bad file")), on_failed=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert errors[0].user_error and "bad file" in errors[0].message
    runner.submit("car", lambda p, c: 1 / 0, on_failed=errors.append)
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=5000)
    assert not errors[1].user_error and "ZeroDivisionError" in errors[1].message
    assert got["new"] == ["new"]          # later jobs of the same kind never reached the first's callback
    runner.shutdown()


def test_job_cancel_and_status_bar(qtbot):
    runner = JobRunner()
    bar = JobStatusBar(runner)
    qtbot.addWidget(bar)
    bar.show()
    cancelled, finished = [], []

    def cancellable(progress, cancel):
        progress(Progress("proposals", 1, 0.5))
        cancel.wait(10)        # until the Cancel button reaches the token
        cancel.check()
        return "finished"

    runner.submit("car", cancellable, label="CaR", on_done=finished.append, on_cancelled=lambda: cancelled.append(1))
    qtbot.waitUntil(lambda: "proposals" in bar.stage_label.text(), timeout=3000)
    assert bar.cancel_button.isVisible()
    bar.cancel_button.click()
    qtbot.waitUntil(lambda: bool(cancelled), timeout=3000)
    assert not bar.cancel_button.isVisible() and not finished
    runner.shutdown()


def test_stepping_through_the_file_list_visits_images_only(qtbot):
    """Clip rows and rows of files the project could not add are never a next or previous image."""
    files = MediaFileList()
    qtbot.addWidget(files)
    files.set_videos([(7, "clip.mov", 30, "new")])
    files.set_images([(1, "a.png", "new"), (2, "b.png", "error"), (3, "c.png", "auto")])
    files.add_failures([("bomb.png", "too large")])
    assert files.keys() == [1, 2, 3, ("video", 7), ("failed", "bomb.png")]
    assert (files.image_keys(), files.clip_ids()) == ([1, 2, 3], [7])
    assert [files.neighbour(1, +1), files.neighbour(3, +1), files.neighbour(3, -1), files.neighbour(1, -1)] == [
        3, None, 1, None]
    assert files.neighbour(99, +1) == 1 and files.neighbour(99, -1) == 3   # from a frame of a clip: the ends
