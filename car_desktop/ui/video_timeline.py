"""The timeline under the canvas while a clip is open: scrub, step, jump between key frames, play.

``TimelineBar`` paints the clip as a strip: a tick per key frame (where CaR ran), red spans where an
object has no mask between frames where it has one (a gap: SAM 2 lost it, or it left the view), a
shade over the frames a running propagation has finished, and the current frame as a cursor.
Clicking or dragging on it asks for that frame. ``Timeline`` adds the buttons (previous key frame,
previous frame, play, next frame, next key frame), the frame counter and the play timer (a low
frame rate: each frame is decoded and shown with its masks). It only asks for frames
(``frameRequested``); the video controller decides what is shown.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QToolButton, QWidget

#: Frames per second while playing: each frame is decoded and its masks loaded from the project.
PLAY_FPS = 5


class TimelineBar(QWidget):
    """The painted strip of the clip (see the module docstring)."""

    frameRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frame_count = 0
        self.current = 0
        self.keys: list[int] = []
        self.gaps: list[tuple[int, int]] = []
        self.done: set[int] = set()
        self.setMinimumHeight(26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(False)
        self.setToolTip("Click or drag to go to a frame. Ticks: key frames (CaR ran there); red: an object is "
                        "missing between frames where it was found")

    def set_clip(self, frame_count: int) -> None:
        self.frame_count, self.current = frame_count, 0
        self.keys, self.gaps, self.done = [], [], set()
        self.update()

    def set_marks(self, keys: Iterable[int], gaps: Iterable[tuple[int, int]]) -> None:
        self.keys = sorted(set(keys))
        self.gaps = sorted(gaps)
        self.update()

    def x_of(self, frame: float) -> float:
        return 4 + (self.width() - 8) * (frame + 0.5) / max(1, self.frame_count)

    def frame_at(self, x: float) -> int:
        frac = (x - 4) / max(1.0, self.width() - 8.0)
        return min(max(int(frac * self.frame_count), 0), max(0, self.frame_count - 1))

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        h, w = self.height(), self.width()
        p.fillRect(self.rect(), QColor(40, 40, 44))
        if self.frame_count <= 0:
            return
        step = (w - 8) / self.frame_count
        for f in self.done:
            p.fillRect(QRectF(self.x_of(f) - step / 2, 4, max(1.0, step), h - 8), QColor(70, 110, 160))
        for a, b in self.gaps:
            p.fillRect(QRectF(self.x_of(a) - step / 2, h - 8, max(2.0, step * (b - a)), 5), QColor(220, 60, 60))
        p.setPen(QPen(QColor(250, 200, 60), 2))
        for k in self.keys:
            x = self.x_of(k)
            p.drawLine(int(x), 3, int(x), h // 2)
        p.setPen(QPen(QColor(255, 255, 255), 2))
        x = self.x_of(self.current)
        p.drawLine(int(x), 1, int(x), h - 1)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.frame_count:
            self.frameRequested.emit(self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton and self.frame_count:
            frame = self.frame_at(event.position().x())
            if frame != self.current:
                self.frameRequested.emit(frame)


class Timeline(QWidget):
    """Buttons, counter and play timer around a ``TimelineBar`` (see the module docstring)."""

    frameRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = TimelineBar(self)
        self.counter = QLabel("")
        self.counter.setMinimumWidth(150)
        self.play_timer = QTimer(self, interval=1000 // PLAY_FPS)
        self.play_timer.timeout.connect(lambda: self.step(+1))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        self.buttons: dict[str, QToolButton] = {}
        for name, text, tip, slot in (
                ("prev_key", "⏮", "Previous key frame (Shift+,)", lambda: self.jump_key(-1)),
                ("prev", "◀", "Previous frame (,)", lambda: self.step(-1)),
                ("play", "▶", f"Play / pause ({PLAY_FPS} frames/s)", self.toggle_play),
                ("next", "▶|", "Next frame (.)", lambda: self.step(+1)),
                ("next_key", "⏭", "Next key frame (Shift+.)", lambda: self.jump_key(+1))):
            button = QToolButton(self)
            button.setText(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            lay.addWidget(button)
            self.buttons[name] = button
        self.buttons["play"].setCheckable(True)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.counter)
        self.bar.frameRequested.connect(self.frameRequested)
        self.fps: float | None = None

    # ----- state the controller sets
    @property
    def current(self) -> int:
        return self.bar.current

    @property
    def frame_count(self) -> int:
        return self.bar.frame_count

    def set_clip(self, frame_count: int, fps: float | None) -> None:
        self.stop()
        self.fps = fps
        self.bar.set_clip(frame_count)
        self.set_frame(0)

    def set_frame(self, frame: int) -> None:
        self.bar.current = frame
        seconds = f"  {frame / self.fps:.2f} s" if self.fps else ""
        key = "  key" if frame in self.bar.keys else ""
        self.counter.setText(f"frame {frame + 1} / {self.bar.frame_count}{seconds}{key}")
        self.bar.update()

    def set_marks(self, keys: Iterable[int], gaps: Iterable[tuple[int, int]]) -> None:
        self.bar.set_marks(keys, gaps)
        self.set_frame(self.current)

    def set_done(self, frames: Iterable[int]) -> None:
        self.bar.done = set(frames)
        self.bar.update()

    # ----- navigation (asks; the controller shows)
    def step(self, delta: int) -> None:
        target = self.current + delta
        if not 0 <= target < self.frame_count:
            self.stop()
            return
        self.frameRequested.emit(target)

    def jump_key(self, direction: int) -> None:
        keys = self.bar.keys
        if not keys:
            return
        if direction > 0:
            i = bisect.bisect_right(keys, self.current)
            target = keys[i] if i < len(keys) else None
        else:
            i = bisect.bisect_left(keys, self.current) - 1
            target = keys[i] if i >= 0 else None
        if target is not None:
            self.frameRequested.emit(target)

    def toggle_play(self) -> None:
        if self.play_timer.isActive():
            self.stop()
        else:
            self.play_timer.start()
            self.buttons["play"].setChecked(True)
            self.buttons["play"].setText("⏸")

    def stop(self) -> None:
        self.play_timer.stop()
        self.buttons["play"].setChecked(False)
        self.buttons["play"].setText("▶")

    @property
    def playing(self) -> bool:
        return self.play_timer.isActive()
