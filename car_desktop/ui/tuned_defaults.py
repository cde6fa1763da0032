"""The project's tuned thresholds in the window: when a project is open whose ``car-desktop tune --save``
stored a setting for the concept bar's preset, the bar's theta / eta (and visual prompts) show the tuned
values instead of the preset's, so runs in the window and folder runs started from it use them. Values
the annotator changed in the drawer are left alone (the rule is evaluation.tuning.with_tuned_defaults,
the same one batch runs follow); choosing the preset again puts the tuned values back. Opening another
project puts the preset's values back first, where the annotator has not changed the tuned ones since.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from ..annotations.store import Project
from ..errors import CaRDesktopError
from ..evaluation.tuning import TUNABLE, with_tuned_defaults
from .concept_bar import ConceptBar
from .engine_client import CaRConfig, preset

log = logging.getLogger(__name__)


class TunedDefaults(QObject):
    """Keeps the concept bar on the open project's tuned thresholds; emits ``applied(text)``."""

    applied = Signal(str)

    def __init__(self, bar: ConceptBar, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bar = bar
        self.project: Project | None = None
        self._applied: CaRConfig | None = None   # what apply() put in the bar for the open project
        self._tip = bar.theta.toolTip()
        bar.presetChanged.connect(lambda _name: self.apply())

    def set_project(self, project: Project | None) -> None:
        self._restore()
        self.project = project
        self.apply()

    def apply(self) -> bool:
        self._applied = None
        if self.project is None:
            return False
        try:
            config, tuned = with_tuned_defaults(self.bar.config(), self.project)
        except CaRDesktopError as exc:   # an invalid drawer or an unreadable project: leave the bar as it is
            log.info("tuned thresholds not applied: %s", exc)
            return False
        if tuned is None:
            return False
        self._show(config)
        self._applied = config
        text = (f"Tuned thresholds of this project for {config.preset}: theta {config.theta:.2f}, eta {config.eta:.2f}"
                f" (car-desktop tune, {tuned.get('objective', '?')} on {tuned.get('images', '?')} images)")
        self.bar.theta.setToolTip(text)
        self.applied.emit(text)
        return True

    def _restore(self) -> None:
        """The project's tuned values go back to the preset's, except those the annotator changed since."""
        applied, self._applied = self._applied, None
        if applied is None:
            return
        try:
            current = self.bar.config()
        except CaRDesktopError:
            return
        if current.preset != applied.preset:
            return
        base = preset(applied.preset)
        self._show(current.replace(**{f: getattr(base, f) for f in TUNABLE
                                      if getattr(current, f) == getattr(applied, f)}))
        self.bar.theta.setToolTip(self._tip)

    def _show(self, config: CaRConfig) -> None:
        self.bar.eta.setValue(config.eta)
        self.bar.theta.setValue(config.theta)
        for name, box in self.bar.prompt_boxes.items():
            box.setChecked(name in config.prompts)
