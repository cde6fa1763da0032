"""The polygon editor: Qt-free geometry (annotations.polygon_shape) and the canvas tool in the window."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from car_desktop.annotations import mask_ops
from car_desktop.annotations.polygon_shape import MIN_VERTICES, PolygonShape


def _rect_mask(shape=(40, 50), y0=10, x0=12, y1=25, x1=30) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- geometry, no Qt
def test_from_mask_traces_the_exporters_rings_and_rasterises_back():
    m = _rect_mask()
    m[30:33, 3:6] = True                       # a second part
    shape = PolygonShape.from_mask(m)
    assert len(shape.rings) == 2
    corners = {tuple(v) for v in shape.rings[0].tolist()} | {tuple(v) for v in shape.rings[1].tolist()}
    assert {(12.0, 10.0), (30.0, 10.0), (30.0, 25.0), (12.0, 25.0)} <= corners
    assert np.array_equal(shape.to_mask(m.shape), m)


def test_hole_is_lost_as_in_coco_polygons():
    m = _rect_mask()
    m[15:18, 18:22] = False
    assert np.array_equal(PolygonShape.from_mask(m).to_mask(m.shape), _rect_mask())


def test_empty_mask_gives_an_empty_shape():
    shape = PolygonShape.from_mask(np.zeros((5, 5), bool))
    assert shape.is_empty() and not shape.to_mask((5, 5)).any()


def test_hit_tests_and_edits():
    shape = PolygonShape.from_mask(_rect_mask())
    assert shape.vertex_count == 4
    ring, i = shape.vertex_at(30.4, 9.7, tol=1.0)
    assert tuple(shape.rings[ring][i]) == (30.0, 10.0)
    assert shape.vertex_at(20, 17, tol=1.0) is None
    ring, after, (x, y) = shape.edge_at(21.0, 10.3, tol=1.0)
    assert (x, y) == (21.0, 10.0)
    assert shape.ring_containing(20, 17) == 0 and shape.ring_containing(2, 2) is None
    new = shape.insert_vertex(ring, after, 21.0, 4.0)       # pull the top edge up into a peak
    assert shape.vertex_count == 5 and tuple(shape.rings[0][new]) == (21.0, 4.0)
    peaked = shape.to_mask((40, 50))
    assert peaked[6, 21] and not _rect_mask()[6, 21]
    assert shape.delete_vertex(0, new) and shape.vertex_count == 4
    assert np.array_equal(shape.to_mask((40, 50)), _rect_mask())
    shape.translate(5, -2)
    assert np.array_equal(shape.to_mask((40, 50)), _rect_mask(y0=8, x0=17, y1=23, x1=35))
    shape.move_vertex(0, 0, 0.0, 0.0)
    assert shape.to_mask((40, 50))[2, 2]


def test_delete_refused_below_three_vertices():
    shape = PolygonShape([np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)])
    assert shape.delete_vertex(0, 0)
    assert len(shape.rings[0]) == MIN_VERTICES
    assert not shape.delete_vertex(0, 0)
    assert len(shape.rings[0]) == MIN_VERTICES


def test_to_mask_is_mask_ops_rasteriser():
    shape = PolygonShape([np.array([[3.3, 2.2], [20.7, 5.1], [11.2, 18.9]], float)])
    expected = mask_ops.polygons_mask((24, 24), [[3.3, 2.2, 20.7, 5.1, 11.2, 18.9]])
    assert np.array_equal(shape.to_mask((24, 24)), expected)


# --------------------------------------------------------------------------- in the window
@pytest.fixture
def win(qtbot, tmp_path, data_dir):
    from fakes import fake_window

    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("astronaut.jpg", "chelsea.jpg")):
        Image.open(data_dir / name).convert("RGB").resize((128, 96)).save(folder / f"img{i}.png")
    w = fake_window(qtbot, tmp_path)
    w.resize(1200, 800)
    qtbot.waitUntil(lambda: w.engine.ready, timeout=5000)
    with qtbot.waitSignal(w.imageShown, timeout=5000):
        assert w.open_folder(folder)
    yield w
    w.close()


def _layer(win, mask: np.ndarray):
    layer = win.annotator.add_layer("thing", mask)
    win.stack.select(layer.id)
    return layer


def _view_pos(win, x: float, y: float):
    return win.canvas.mapFromScene(x, y)


def test_drag_vertex_enter_is_one_undoable_step(win, qtbot):
    from PySide6.QtCore import Qt

    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    layer = _layer(win, mask)
    before = layer.mask.copy()
    undo_steps = len(win.annotator._groups_undo)
    win.edit_polygon()
    tool = win.polygon_editor
    assert win.canvas.tool() is tool and tool.editing()
    assert tool.shape.vertex_count == 4
    vp = win.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 90, 20))
    assert tool.active is not None
    qtbot.mouseMove(vp, pos=_view_pos(win, 110, 8))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 110, 8))
    ring, i = tool.active
    moved = tool.shape.rings[ring][i]
    assert abs(moved[0] - 110) < 1 and abs(moved[1] - 8) < 1
    expected = mask_ops.polygons_mask(mask.shape, tool.shape.flat_rings())
    assert layer.mask.sum() == before.sum()          # nothing is written before Enter
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    assert win.canvas.tool() is None                  # back to the plain canvas
    assert np.array_equal(layer.mask, expected)
    assert np.array_equal(win.project.get_mask(win.annotator.annotation_id(layer.id)), expected)
    assert len(win.annotator._groups_undo) == undo_steps + 1
    win.annotator.undo()
    assert np.array_equal(layer.mask, before)
    assert np.array_equal(win.project.get_mask(win.annotator.annotation_id(layer.id)), before)


def test_escape_leaves_the_mask_unchanged(win, qtbot):
    from PySide6.QtCore import Qt

    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    layer = _layer(win, mask)
    before = layer.mask.copy()
    steps = len(win.annotator._groups_undo)
    win.edit_polygon()
    vp = win.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 60, 40))   # inside: move the shape
    qtbot.mouseMove(vp, pos=_view_pos(win, 70, 50))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 70, 50))
    assert win.polygon_editor.shape.rings[0][:, 0].min() > 35
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)
    assert win.canvas.tool() is None
    assert np.array_equal(layer.mask, before)
    assert len(win.annotator._groups_undo) == steps
    assert win.stack.selected_id == layer.id          # Esc ended the edit only, the mask stays selected


def test_insert_and_delete_vertices_with_mouse_and_delete_key(win, qtbot):
    from PySide6.QtCore import Qt

    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    layer = _layer(win, mask)
    win.edit_polygon()
    tool = win.polygon_editor
    vp = win.canvas.viewport()
    qtbot.mouseDClick(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 60, 20))   # on the top edge
    assert tool.shape.vertex_count == 5
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Delete)     # the editor's, not the window's "Delete mask"
    assert tool.shape.vertex_count == 4 and win.stack.get(layer.id) is not None
    qtbot.mousePress(vp, Qt.MouseButton.RightButton, pos=_view_pos(win, 30, 60))   # a corner
    assert tool.shape.vertex_count == 3
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    expected = mask_ops.polygons_mask(mask.shape, [[30, 20, 90, 20, 90, 60]])
    assert np.array_equal(layer.mask, expected)


def test_ctrl_j_without_a_mask_says_so(win, qtbot):
    win.stack.select(-1)
    win.edit_polygon()
    assert win.canvas.tool() is None
    assert "Select a mask" in win.status.currentMessage()


def test_mask_removed_while_editing_ends_the_edit(win, qtbot):
    """Undoing the mask away while its polygon is edited ends the edit: Enter then writes nothing (it
    raised KeyError into the event loop and saved a row for a mask no longer shown)."""
    from PySide6.QtCore import Qt

    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    layer = _layer(win, mask)
    win.edit_polygon()
    vp = win.canvas.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 90, 20))
    qtbot.mouseMove(vp, pos=_view_pos(win, 110, 8))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_view_pos(win, 110, 8))
    win.annotator.undo()                              # the mask's creation is undone
    assert win.stack.get(layer.id) is None
    assert not win.polygon_editor.editing() and win.canvas.tool() is None
    assert any("removed meanwhile" in t for t in win.messages.texts())
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    assert not layer.mask.any() and win.annotator.annotation_id(layer.id) is None
    assert win.project.list_annotations(win.image_id) == []


def test_editing_a_mask_with_holes_says_they_will_be_filled(win, qtbot):
    mask = np.zeros((96, 128), bool)
    mask[20:60, 30:90] = True
    solid = _layer(win, mask.copy())
    win.edit_polygon()
    assert not any("holes" in t for t in win.messages.texts())
    win.polygon_editor.cancel()
    mask[30:40, 50:60] = False                      # a hole
    _layer(win, mask)
    assert win.stack.selected_id != solid.id
    win.edit_polygon()
    assert "holes are not shown" in win.messages.texts()[-1]
