"""Undo/redo history: exact restoration over 100 strokes, redo, memory budget and the 4000x3000 bound."""

from __future__ import annotations

import numpy as np

from car_desktop.annotations import History, mask_ops
from car_desktop.annotations.mask_ops import apply_edit


def _random_strokes(mask: np.ndarray, history: History, n: int, rng, radius=(2, 12)) -> np.ndarray:
    """Apply strokes until ``n`` of them changed something (and were recorded)."""
    h, w = mask.shape
    i = 0
    while len(history) < n:
        i += 1
        pts = [(rng.uniform(0, w), rng.uniform(0, h))]
        for _ in range(4):
            pts.append((pts[-1][0] + rng.uniform(-40, 40), pts[-1][1] + rng.uniform(-40, 40)))
        op = mask_ops.paint_stroke if i % 3 else mask_ops.erase
        mask, edit = op(mask, pts, float(rng.uniform(*radius)))
        history.push(7, edit)
    return mask


def test_100_strokes_undo_redo_exact():
    rng = np.random.default_rng(0)
    original = rng.random((240, 320)) > 0.7
    hist = History()
    final = _random_strokes(original.copy(), hist, 100, rng)
    assert len(hist) == 100
    mask = final.copy()
    while hist.can_undo():
        ann_id, edit = hist.undo()
        assert ann_id == 7
        mask = apply_edit(mask, edit)
    assert np.array_equal(mask, original)
    assert hist.undo() is None
    while hist.can_redo():
        _, edit = hist.redo()
        mask = apply_edit(mask, edit)
    assert np.array_equal(mask, final)


def test_push_clears_redo():
    hist = History()
    m = np.zeros((20, 20), bool)
    m1, e1 = mask_ops.paint_stroke(m, [(5, 5)], 2)
    hist.push(1, e1)
    _, undo_edit = hist.undo()
    assert np.array_equal(apply_edit(m1, undo_edit), m)
    _, e2 = mask_ops.paint_stroke(m, [(15, 15)], 2)
    hist.push(1, e2)
    assert not hist.can_redo() and hist.can_undo()
    assert not hist.push(1, mask_ops.replace(m, m)[1])  # empty edits are not recorded


def test_budget_drops_oldest():
    rng = np.random.default_rng(1)
    hist = History(budget_bytes=100_000)
    mask = np.zeros((300, 300), bool)
    for _ in range(200):
        noise = rng.random((300, 300)) > 0.5  # incompressible edits
        mask, edit = mask_ops.replace(mask, noise)
        hist.push(1, edit)
        assert hist.memory_bytes <= hist.budget_bytes
    assert 0 < len(hist) < 200
    # The steps that remain still undo correctly to the state they were recorded from.
    hist2 = History(max_steps=5)
    m = np.zeros((50, 50), bool)
    states = [m]
    for i in range(10):
        m, e = mask_ops.paint_stroke(m, [(5 * i + 2, 25)], 2)
        hist2.push(1, e)
        states.append(m)
    assert len(hist2) == 5
    while hist2.can_undo():
        m = apply_edit(m, hist2.undo()[1])
    assert np.array_equal(m, states[5])


def test_100_brush_steps_on_4000x3000_fit_200mb():
    rng = np.random.default_rng(2)
    mask = np.zeros((3000, 4000), bool)
    mask[500:2500, 800:3200] = True
    hist = History(budget_bytes=200 * 1024 * 1024)
    _random_strokes(mask, hist, 100, rng, radius=(20, 80))
    assert len(hist) == 100
    assert hist.memory_bytes < 200 * 1024 * 1024
    assert hist.memory_bytes < 5 * 1024 * 1024  # compressed diffs: far below the bound
