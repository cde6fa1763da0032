"""The annotation model: project store, editable masks with undo, COCO import/export. Never Qt or torch.

API summary (all masks are 2-D numpy bool arrays of the image's (height, width)):

* ``Project.create(path, image_root)`` / ``Project.open(path)`` -> ``Project`` (context manager,
  ``close()``). Opening a missing, corrupt, foreign or newer file raises ``ProjectNotFoundError`` /
  ``ProjectCorruptError`` / ``ProjectForeignError`` / ``ProjectSchemaError`` and changes nothing.
  ``project.image_root`` (settable), ``relink(new_root) -> RelinkReport`` (by content hash),
  ``batch()`` groups changes into one transaction; every other write is one transaction.
* ``Project.open_or_create(path, image_root) -> (Project, created)`` (safe with several processes),
  ``Project.open(path, readonly=True)`` for a file that cannot be written; ``output_guard(force)``
  is the check every export runs on its output paths.
* Images: ``add_images(paths | folder) -> list[ImageRecord]``, ``add_folder(folder, select=None) ->
  (records, failures)``, ``add_files(rel_paths)``, ``add_image_entry(rel, w, h, hash)``,
  ``list_images(status=None)``, ``get_image(id)``, ``find_image(rel)``, ``image_path(id)``,
  ``set_image_status(id, 'new'|'auto'|'reviewed')``, ``count_images()``,
  ``review_queue(limit) -> [(ImageRecord, min_score)]`` (least confident first).
* Categories: ``get_or_create_category(name, synonyms=()) -> Category`` ('car | automobile' accepted),
  ``list_categories()``, ``get_category(id)``, ``find_category(name)``, ``rename_category(id, name,
  synonyms=None)``, ``recolor_category(id, '#rrggbb' | (r,g,b) | None)``, ``delete_category(id)``.
  ``Category.color`` is stable: the palette colour of its id unless recoloured.
* Annotations: ``add_annotation(image_id, category_id, mask, score=None, source='manual',
  provenance=None) -> Annotation``, ``update_mask(id, mask, edited=True)``, ``delete_annotation(id)``,
  ``set_annotation_category(id, category_id)``, ``list_annotations(image_id)`` (rows, no masks),
  ``get_mask(id)``, ``get_rle(id)``,
  ``count_annotations(image_id=None)``. Settings: ``get_setting(key, default)`` / ``set_setting(key, json_value)``.
* Failures (files that could not be added or auto-labelled, kept with their hash):
  ``record_failure``, ``list_failures(stage=None)``, ``failure_unchanged(rel)``, ``clear_failure``,
  ``failed_image_ids()``. Claims (two auto-label runs share the images): ``claim_image(id, owner)``,
  ``release_claim``, ``release_claims``, ``Project.new_claim_owner()``.
* ``Provenance`` (provenance.py): the one typed record of where a mask came from.
* ``car_results.apply_car_result(project, image_id, result, origin=...)``: the one rule that stores a
  CaR result (replaces unedited CaR masks, protects a person's by category, records provenance and the
  removed concepts, and the image's auto-label record); the window and the folder loop both call it.
  ``force_keep``, ``removed_concepts`` (the window's rows of removed concepts).
* ``auto_labels.read_auto_labels(project, image_id) -> AutoLabels | None``: what CaR produced for the
  image before any edit (every concept asked, verdict, score, mask); ``auto_labels.auto_mask(project,
  annotation_id)``: one mask as CaR made it (None for masks CaR did not make).
* ``Rect(y0, x0, y1, x1)``: the one (half-open) rectangle type; ``Rect.of_mask(mask)``, ``.slices``.
* ``mask_ops`` (the one implementation of mask geometry, used by the GUI tools too):
  ``paint_stroke(mask, points, radius, value=True)``, ``erase``, ``add_polygon``,
  ``subtract_polygon``, ``fill_holes``, ``remove_specks(mask, min_pixels)``, ``merge(mask, others)``,
  ``replace(mask, new_mask)`` each return ``(new_mask, Edit)``; ``split_instances(mask)`` returns
  ``(kept_mask, Edit, other_part_masks)``; ``apply_edit(mask, edit, reverse=False)``;
  ``paint_into(mask, points, radius)`` paints in place (the live brush); ``polygons_mask(shape, rings)``
  rasterises COCO rings; ``region_edit`` / ``added_edit`` build edits.
* ``History(budget_bytes)``: ``push(annotation_id, edit)``, ``undo()`` / ``redo()`` -> ``(annotation_id,
  edit_to_apply)`` or None (apply with ``apply_edit(mask, edit)``), ``can_undo()``, ``can_redo()``.
* ``export_coco(project, out, image_ids=None, fmt='auto'|'polygon'|'rle', mode='instance'|'components'|
  'semantic', include_score=True, on_holes='report'|'refuse', progress=None,
  polygon_convention='pixel-edges'|'pixel-centres', keep_empty_categories=False, include_failed=False,
  force=False) -> ExportReport``; ``export_label_pngs(project, out_dir, image_ids=None,
  include_failed=False, force=False) -> ExportReport``; ``import_coco(project, coco_json, images_dir,
  progress=None, stage=None) -> ImportReport`` (idempotent; every entry checked, see coco_import).
* Clips (video): ``video_store`` (clips, their frames as images, tracks, key frames, propagation
  records), ``video_masks`` (key-frame CaR results, propagated masks, the undo journal of a run),
  ``video_export.export_video_coco`` (one image per frame, track ids) and ``ytvis`` (YouTube-VIS
  writer and reader). See docs/video.md.
"""

from .coco_export import export_coco
from .coco_import import import_coco
from .errors import (
    CocoImportError,
    ExportError,
    MaskError,
    ProjectCorruptError,
    ProjectError,
    ProjectForeignError,
    ProjectNotFoundError,
    ProjectSchemaError,
)
from .history import History
from .label_png import export_label_pngs
from .mask_ops import (
    add_polygon,
    apply_edit,
    erase,
    fill_holes,
    merge,
    paint_stroke,
    remove_specks,
    replace,
    split_instances,
    subtract_polygon,
)
from .models import (
    Annotation,
    Category,
    Edit,
    ExportReport,
    ImageRecord,
    ImportProblem,
    ImportReport,
    Rect,
    RelinkReport,
)
from .palette import color_for_id
from .provenance import Provenance
from .store import Project

__all__ = [
                     "Annotation",
                     "Category",
                     "CocoImportError",
                     "Edit",
                     "ExportError",
                     "ExportReport",
                     "History",
                     "ImageRecord",
                     "ImportProblem",
                     "ImportReport",
                     "MaskError",
                     "Project",
                     "ProjectCorruptError",
                     "ProjectError",
                     "ProjectForeignError",
                     "ProjectNotFoundError",
                     "ProjectSchemaError",
                     "Provenance",
                     "Rect",
                     "RelinkReport",
                     "add_polygon",
                     "apply_edit",
                     "color_for_id",
                     "erase",
                     "export_coco",
                     "export_label_pngs",
                     "fill_holes",
                     "import_coco",
                     "merge",
                     "paint_stroke",
                     "remove_specks",
                     "replace",
                     "split_instances",
                     "subtract_polygon",
]
