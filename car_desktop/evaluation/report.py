"""The HTML report of an evaluation: one ``index.html`` with matplotlib pictures beside it.

Pictures: per-class IoU bars (with the mIoU line), the confusion matrix (rows normalised: where each GT
class's pixels went), presence precision / recall per concept, and a gallery of the worst images with
GT and prediction overlaid on the photo. Everything is written inside the chosen folder only, each file
under a temporary name then renamed, ``index.html`` last, so an interrupted run never leaves a page that
points at half-written pictures. matplotlib is an optional dependency (the ``report`` extra): without
it the report says how to install it, and the other outputs still work.

Pictures are drawn with matplotlib's object API (``Figure`` + the Agg canvas), not pyplot, so the report
touches no global backend state and can run in any thread.
"""

from __future__ import annotations

import html
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..annotations.palette import color_for_id
from ..errors import CaRDesktopError
from ..fileio import atomic_write, atomic_write_text, dumps_strict
from ..safepaths import OutputGuard, sqlite_companions
from .errors import EvaluationError
from .evaluate import EvalResult, WorstImage
from .labels import IGNORE
from .metrics import fmt

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'car-desktop[report]' (or: pip install 'matplotlib>=3.8')"
#: Long side of the gallery pictures; larger images are shown downscaled.
GALLERY_SIDE = 480


def require_matplotlib() -> None:
    """Raise EvaluationError with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EvaluationError(f"The HTML report needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def output_guard(protected: Iterable[Path]) -> OutputGuard:
    """The outputs' check (``safepaths.OutputGuard``): never one of the ``protected`` inputs, nor the
    files SQLite keeps beside a project input, nor anything that is not a regular file."""
    return OutputGuard(protected=[c for p in protected for c in sqlite_companions(p)])


def check_outputs(json_file: Path | None, report_dir: Path | None, protected: Iterable[Path]) -> None:
    """Refuse ``--json`` / ``--report`` paths the guard refuses, before any work (EvaluationError)."""
    guard = output_guard(protected)
    try:
        if json_file is not None:
            guard.check_file(json_file, "--json file")
        if report_dir is not None:
            guard.check_dir(report_dir, "report folder")
    except CaRDesktopError as exc:
        raise EvaluationError(str(exc)) from None


def prepare_dir(out_dir: Path, protected: Iterable[Path] = ()) -> Path:
    """Create ``out_dir`` (and its parents) and check it can be written; returns it."""
    out_dir = Path(out_dir)
    check_outputs(None, out_dir, protected)
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EvaluationError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from None
    return out_dir


def write_json(result_dict: dict, target: Path, protected: Iterable[Path] = ()) -> None:
    """``--json FILE``: the metrics as (strict) JSON, written atomically."""
    target = Path(target)
    check_outputs(target, None, protected)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, dumps_strict(result_dict, indent=1))
    except OSError as exc:
        raise EvaluationError(f"cannot write {target}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------ figures
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, target: Path) -> None:
    fig.tight_layout()
    atomic_write(target, lambda fh: fig.savefig(fh, format="png"))


def iou_figure(result: EvalResult, target: Path) -> None:
    names = result.class_names
    iou = np.nan_to_num(result.iou, nan=0.0)
    fig = _figure(7.5, max(2.5, 0.28 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    first = 1 if result.background_dropped else 0
    colours = [np.array(_colour(i + first) if i + first else (110, 110, 110)) / 255 for i in range(len(names))]
    ax.barh(y, iou, color=colours, edgecolor="#333333", linewidth=0.4)
    for yi, (v, raw) in enumerate(zip(iou, result.iou)):
        ax.text(min(v + 0.01, 0.93), yi, "n/a" if math.isnan(raw) else f"{v:.2f}", va="center", fontsize=8)
    if not math.isnan(result.miou):
        ax.axvline(result.miou, color="#d62728", linestyle="--", linewidth=1.2, label=f"mIoU {result.miou:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, labels=[n if s else f"{n} (not in GT)" for n, s in zip(names, result.scored)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title("IoU per class")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, target)


def confusion_figure(result: EvalResult, target: Path) -> None:
    conf = result.confusion.astype(np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(result.class_names)
    side = min(14.0, max(4.5, 0.32 * n + 2.5))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the GT class's pixels")
    size = 8 if n <= 25 else 6 if n <= 60 else 4
    ax.set_xticks(range(n), labels=result.class_names, rotation=90, fontsize=size)
    ax.set_yticks(range(n), labels=result.class_names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (rows normalised)")
    _save(fig, target)


def presence_figure(result: EvalResult, target: Path) -> None:
    names = list(result.presence)
    fig = _figure(7.5, max(2.5, 0.36 * len(names) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    if not names:
        ax.text(0.5, 0.5, "no concept known to both sides", ha="center", va="center")
        ax.set_axis_off()
    else:
        y = np.arange(len(names))
        prec = [result.presence[n].precision for n in names]
        rec = [result.presence[n].recall for n in names]
        ax.barh(y - 0.2, np.nan_to_num(prec), height=0.4, color="#1f77b4", label="precision (kept & present / kept)")
        ax.barh(y + 0.2, np.nan_to_num(rec), height=0.4, color="#ff7f0e", label="recall (kept & present / present)")
        for yi, (p, r) in enumerate(zip(prec, rec)):
            ax.text(0.005 + np.nan_to_num(p), yi - 0.2, fmt(p, 2), va="center", fontsize=7)
            ax.text(0.005 + np.nan_to_num(r), yi + 0.2, fmt(r, 2), va="center", fontsize=7)
        ax.set_yticks(y, labels=names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.08)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=7, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    ax.set_title("Presence per concept: kept where present, removed where absent")
    _save(fig, target)


def _colour(class_value: int) -> tuple[int, int, int]:
    return (0, 0, 0) if class_value == 0 else color_for_id(class_value)


def _rgb01(class_value: int) -> tuple[float, float, float]:
    r, g, b = _colour(class_value)
    return r / 255, g / 255, b / 255


def overlay(image: np.ndarray | None, label: np.ndarray) -> np.ndarray:
    """RGB uint8: the photo (grey when missing) with each class tinted in its colour, ignored pixels white."""
    h, w = label.shape
    base = np.full((h, w, 3), 128, np.uint8) if image is None else image
    out = base.astype(np.float32) * 0.55
    values = np.unique(label)
    for v in values:
        if v == 0:
            continue
        colour = np.array((255, 255, 255) if v == IGNORE else _colour(int(v)), np.float32)
        sel = label == v
        out[sel] = base[sel].astype(np.float32) * 0.35 + colour * 0.65
    bg = label == 0
    out[bg] = base[bg].astype(np.float32) * 0.75
    return np.clip(out, 0, 255).astype(np.uint8)


def _small(array: np.ndarray, nearest: bool) -> np.ndarray:
    import cv2

    h, w = array.shape[:2]
    scale = GALLERY_SIDE / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    src = array.astype(np.int32) if nearest else array
    return cv2.resize(src, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _load_photo(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None:
        return None
    from ..engine.image_io import load_image

    try:
        image = load_image(path)
    except (CaRDesktopError, OSError, MemoryError) as exc:
        log.info("report: no picture for %s (%s)", path, exc)
        return None
    if image.shape[:2] != shape:
        import cv2

        image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return image


def gallery_figure(item: WorstImage, class_names: list[str], target: Path, class_offset: int = 0) -> None:
    gt, pred = _small(item.gt, True), _small(item.pred, True)
    photo = _load_photo(item.path, item.gt.shape)
    small = _small(photo, False) if photo is not None else None
    h, w = gt.shape
    fig = _figure(11, 11 * h / (3 * w) + 0.9)
    panels = [("image" if small is not None else "image (file not found)",
               small if small is not None else np.full((h, w, 3), 128, np.uint8)),
              ("ground truth", overlay(small, gt)), ("prediction", overlay(small, pred))]
    for k, (title, picture) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 3, k)
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    from matplotlib.patches import Patch

    shown = sorted({int(v) for v in np.unique(np.concatenate([gt.ravel(), pred.ravel()])) if v > 0})
    # Label values index the full class list; without background the names start at value 1.
    handles = [Patch(color=_rgb01(v), label=class_names[v - class_offset]
                     if 0 <= v - class_offset < len(class_names) else str(v)) for v in shown]
    if (gt == IGNORE).any():
        handles.append(Patch(facecolor="white", edgecolor="#999999", label="not scored"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    worst = ", ".join(f"{k} {v:.2f}" for k, v in sorted(item.ious.items(), key=lambda kv: kv[1])[:4])
    fig.suptitle(f"{item.name}: mean IoU {item.miou:.3f} ({worst})", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.95))
    atomic_write(target, lambda fh: fig.savefig(fh, format="png"))


# ------------------------------------------------------------------------------------------ page
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.bar{display:inline-block;height:.7em;background:#4c78a8;vertical-align:middle;margin-right:.4em}
.note{color:#8a5a00}.big{font-size:1.3em}"""


def _row(*cells: str, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _page(result: EvalResult, title: str, figures: dict[str, str], gallery: list[tuple[str, WorstImage]],
          extra: dict[str, str]) -> str:
    e = html.escape
    t = result.presence_total
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>")]
    summary = [("images", str(result.n_images)),
               ("mIoU", (f"<span class='big'>{fmt(result.miou)}</span> "
                        f"({'background excluded' if result.background_dropped else 'background included'})")),
               ("pixel accuracy", fmt(result.pixel_accuracy)),
               ("presence precision / recall / F1", f"{fmt(t.precision)} / {fmt(t.recall)} / {fmt(t.f1)}")]
    if result.ap is not None:
        summary.append(("mask AP (COCOeval segm)", (f"{fmt(result.ap.ap)} (AP50 {fmt(result.ap.ap50)}, "
                                                   f"AP75 {fmt(result.ap.ap75)})")))
    summary += [(e(k), e(v)) for k, v in result.inputs.items()] + [(e(k), e(v)) for k, v in extra.items()]
    parts.append("<table>" + "".join(_row(k, v) for k, v in summary) + "</table>")
    if result.notes:
        parts.append("<ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("<h2>IoU per class</h2>")
    rows = [_row("class", "IoU", "GT pixels", "predicted pixels", "presence P", "R", "F1", header=True)]
    for i, name in enumerate(result.class_names):
        v = float(result.iou[i])
        bar = "" if math.isnan(v) else f"<span class='bar' style='width:{int(80 * v)}px'></span>"
        p = result.presence.get(name)
        rows.append(_row(e(name if result.scored[i] else f"{name} (not in GT)"), bar + fmt(v),
                         str(int(result.pixels_gt[i])) if result.pixels_gt is not None else "",
                         str(int(result.pixels_pred[i])) if result.pixels_pred is not None else "",
                         fmt(p.precision if p else None, 2), fmt(p.recall if p else None, 2),
                         fmt(p.f1 if p else None, 2)))
    parts.append("<table>" + "".join(rows) + "</table>")
    for key, heading in (("iou", "IoU per class"), ("confusion", "Confusion matrix"),
                         ("presence", "Presence per concept")):
        if key in figures:
            parts.append(f"<h3>{heading}</h3><img src='{e(figures[key])}' alt='{heading}'>")
    if gallery:
        parts.append("<h2>Worst images</h2><p>Left: the image; middle: ground truth; right: prediction. "
                     "White: pixels that are not scored.</p>")
        for src, w in gallery:
            parts.append(f"<h3>{e(w.name)} — mean IoU {fmt(w.miou)}</h3><img src='{e(src)}' alt='{e(w.name)}'>")
    parts.append("<p>Written by CaR Desktop's <code>eval</code>. IoU = TP / (TP + FP + FN) over all images' "
                 "pixels; presence: per image and concept, kept (non-empty mask) against present in GT.</p>"
                 "</body></html>")
    return "\n".join(parts)


def write_report(result: EvalResult, out_dir: str | os.PathLike, *, title: str = "CaR Desktop evaluation",
                 protected: Iterable[Path] = (), extra: dict[str, str] | None = None) -> Path:
    """Write ``index.html`` and ``figures/*.png`` into ``out_dir``; returns the page's path."""
    require_matplotlib()
    protected = list(protected)
    out = prepare_dir(Path(out_dir), protected)
    fig_dir = out / "figures"
    targets = {"iou": fig_dir / "per_class_iou.png", "confusion": fig_dir / "confusion.png",
               "presence": fig_dir / "presence.png"}
    gallery_targets = [fig_dir / f"worst_{k:02d}.png" for k in range(1, len(result.worst) + 1)]
    guard = output_guard(protected)
    try:
        for target in [*targets.values(), *gallery_targets, out / "index.html", out / "metrics.json"]:
            guard.check_file(target, "report")
    except CaRDesktopError as exc:
        raise EvaluationError(str(exc)) from None
    offset = 1 if result.background_dropped else 0
    names_for_gallery = result.class_names
    try:
        iou_figure(result, targets["iou"])
        confusion_figure(result, targets["confusion"])
        presence_figure(result, targets["presence"])
        for item, target in zip(result.worst, gallery_targets):
            gallery_figure(item, names_for_gallery, target, class_offset=offset)
        atomic_write_text(out / "metrics.json", dumps_strict(result.to_dict(), indent=1))
        figures = {k: f"figures/{v.name}" for k, v in targets.items()}
        gallery = [(f"figures/{t.name}", w) for t, w in zip(gallery_targets, result.worst)]
        page = _page(result, title, figures, gallery, extra or {})
        atomic_write_text(out / "index.html", page)
    except OSError as exc:
        raise EvaluationError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    return out / "index.html"
