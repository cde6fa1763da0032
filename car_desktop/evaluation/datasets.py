"""The public benchmarks of the CaR paper, read from their published folder layouts, with the class names
and presets the authors used, so ``car-desktop eval-dataset`` can reproduce the paper's numbers.

* ``voc2012`` / ``voc20``: Pascal VOC 2012 (``VOCdevkit/VOC2012``): ``ImageSets/Segmentation/<split>.txt``,
  ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG: 0 background, 1..20 classes, 255
  border, not scored). voc20 leaves background out of the matrix, as the released code does for VOC-20.
* ``context59`` / ``context60``: Pascal Context as converted by mmsegmentation (``VOCdevkit/VOC2010``):
  ``ImageSets/SegmentationContext/<split>.txt``, ``JPEGImages/<id>.jpg``, ``SegmentationClassContext/<id>.png``
  (0 background, 1..59 classes). context59 leaves background out of the matrix.
* ``coco-object``: COCO 2017 (``<root>/val2017/*.jpg`` and ``<root>/annotations/instances_val2017.json``):
  the 80 object classes plus background, the GT map painted from the instance masks (smaller objects on
  top, crowd regions included).

Concept texts are the released code's class lists ("person with clothes,people,human" becomes the
synonyms "person with clothes | people | human"); presets are the paper's per dataset. GT maps come back
with class values 0..n and -1 for pixels that are not scored; every size is read from the file header
and bounded before a pixel is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ..imagefiles import max_pixels
from .errors import EvaluationError
from .labels import IGNORE, ImageLabels, load_coco, paint

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: The released code's VOC prompts (data/voc.py), in class order.
VOC_CONCEPTS = ("aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat", "chair seat", "cow",
                "diningtable", "dog", "horse", "motorbike", "person with clothes | people | human",
                "pottedplant", "sheep", "sofa", "train", "tvmonitor screen")

#: Pascal Context 59 in label order (mmsegmentation's conversion; the released code's names).
CONTEXT_CLASSES = (
    "airplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building",
    "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "plant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "monitor", "wall",
    "water", "window", "wood")

#: COCO's 80 object classes in category-id order, and the released code's prompts for them.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")
COCO_CONCEPTS = (
    "person with clothes | people | human", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird avian", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack | bag", "umbrella | parasol",
    "handbag | purse", "necktie", "suitcase", "frisbee", "skis", "sknowboard", "sports ball", "kite",
    "baseball bat", "glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "dessertspoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair seat", "sofa", "pottedplant", "bed", "diningtable", "toilet",
    "tvmonitor screen", "laptop", "mouse", "remote control", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hairdrier | blowdrier",
    "toothbrush")


@dataclass
class DatasetImage:
    """One benchmark image: its id, the photo, and a loader of its GT map (0..n, -1 not scored)."""

    name: str
    image_path: Path
    load_gt: Callable[[], np.ndarray]


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    title: str
    classes: tuple[str, ...]            # label values 1..n
    concepts: tuple[str, ...]           # what CaR is asked, in class order
    preset: str
    drop_background: bool
    paper_miou: dict[str, float]        # the paper's mIoU (%) by setting
    layout: str                         # the folder --root points at
    splits: tuple[str, ...] = ("val",)
    images: Callable[[Path, str], tuple[list[DatasetImage], list[Path]]] = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def class_names(self) -> list[str]:
        return ["background", *self.classes]


def read_label_png(path: Path, n_classes: int, ignore_value: int | None = 255) -> np.ndarray:
    """A palette / grey label PNG as int32: values above ``n_classes`` or equal to ``ignore_value`` -> -1."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels():
                raise EvaluationError(f"{path} claims {w}x{h} pixels, above the {max_pixels() // 1_000_000} MP limit")
            if im.mode not in ("P", "L", "I;16", "I"):
                raise EvaluationError(f"{path} is a {im.mode} image, not a label map (palette or grey PNG)")
            arr = np.asarray(im, dtype=np.int32)
    except (OSError, UnidentifiedImageError) as exc:
        raise EvaluationError(f"cannot read the label map {path}: {exc}") from None
    out = arr.copy()
    bad = arr > n_classes
    if ignore_value is not None:
        bad |= arr == ignore_value
    out[bad] = IGNORE
    return out


def _split_ids(list_file: Path) -> list[str]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvaluationError(f"cannot read the split list {list_file}: {exc.strerror or exc}") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise EvaluationError(f"the split list {list_file} is empty")
    return ids


def _png_dataset(root: Path, split: str, sets_dir: str, label_dir: str, n_classes: int
                 ) -> tuple[list[DatasetImage], list[Path]]:
    images_dir, labels_dir = root / "JPEGImages", root / label_dir
    for needed in (images_dir, labels_dir, root / "ImageSets" / sets_dir):
        if not needed.is_dir():
            raise EvaluationError(f"{root} does not look like the expected dataset folder: {needed} is missing")
    out = []
    for image_id in _split_ids(root / "ImageSets" / sets_dir / f"{split}.txt"):
        label = labels_dir / f"{image_id}.png"
        out.append(DatasetImage(image_id, images_dir / f"{image_id}.jpg", partial(read_label_png, label, n_classes)))
    return out, [images_dir, labels_dir]


def voc_images(root: Path, split: str) -> tuple[list[DatasetImage], list[Path]]:
    return _png_dataset(root, split, "Segmentation", "SegmentationClass", len(VOC_CLASSES))


def context_images(root: Path, split: str) -> tuple[list[DatasetImage], list[Path]]:
    return _png_dataset(root, split, "SegmentationContext", "SegmentationClassContext", len(CONTEXT_CLASSES))


def coco_object_images(root: Path, split: str) -> tuple[list[DatasetImage], list[Path]]:
    year_split = f"{split}2017"
    ann = root / "annotations" / f"instances_{year_split}.json"
    images_dir = root / year_split
    if not ann.is_file() or not images_dir.is_dir():
        raise EvaluationError(f"{root} does not look like COCO 2017: expected {ann} and {images_dir}/")
    labels = load_coco(ann, images_dir=images_dir, ignore_index=None)
    # Classes are COCO's categories in id order (80 for instances_*2017.json).
    order = sorted(range(len(labels.categories)), key=lambda i: labels.categories[i].source_id)
    if len(order) != len(COCO_CLASSES):
        raise EvaluationError(f"{ann} has {len(order)} categories, not COCO's {len(COCO_CLASSES)}")
    class_of = {cat: k + 1 for k, cat in enumerate(order)}
    out = []
    for name, entry in labels.images.items():
        out.append(DatasetImage(name, images_dir / name, partial(_paint_map, entry, class_of)))
    return out, [images_dir, root / "annotations"]


def _paint_map(entry: ImageLabels, class_of: dict[int, int]) -> np.ndarray:
    return paint(entry, class_of, by_score=False)[0]


DATASETS: dict[str, DatasetSpec] = {
    "voc2012": DatasetSpec("voc2012", "Pascal VOC 2012 (21 classes, background included)", VOC_CLASSES,
                           VOC_CONCEPTS, "objects", False, {"without SAM": 67.6, "with SAM": 70.2},
                           "VOCdevkit/VOC2012", ("val", "train", "trainval"), voc_images),
    "voc20": DatasetSpec("voc20", "Pascal VOC 2012, 20 classes (background left out)", VOC_CLASSES,
                         VOC_CONCEPTS, "objects", True, {"without SAM": 91.4},
                         "VOCdevkit/VOC2012", ("val", "train", "trainval"), voc_images),
    "context59": DatasetSpec("context59", "Pascal Context, 59 classes (background left out)", CONTEXT_CLASSES,
                             CONTEXT_CLASSES, "scene", True, {"without SAM": 39.5},
                             "VOCdevkit/VOC2010", ("val", "train"), context_images),
    "context60": DatasetSpec("context60", "Pascal Context, 60 classes (background included)", CONTEXT_CLASSES,
                             CONTEXT_CLASSES, "scene", False, {"without SAM": 30.5},
                             "VOCdevkit/VOC2010", ("val", "train"), context_images),
    "coco-object": DatasetSpec("coco-object", "COCO-Object (80 classes and background)", COCO_CLASSES,
                               COCO_CONCEPTS, "objects-and-stuff", False, {"without SAM": 36.6, "with SAM": 37.6},
                               "COCO (val2017/ and annotations/)", ("val", "train"), coco_object_images),
}


def dataset_images(key: str, root: str | Path, split: str, limit: int | None = None
                   ) -> tuple[DatasetSpec, list[DatasetImage], list[Path]]:
    """(spec, images of the split, the folders read) for a dataset key; EvaluationError when unusable."""
    spec = DATASETS.get(key)
    if spec is None:
        raise EvaluationError(f"unknown dataset {key!r}; choose from {', '.join(DATASETS)}")
    if split not in spec.splits:
        raise EvaluationError(f"{key} has no split {split!r}; choose from {', '.join(spec.splits)}")
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root} is not a folder (expected {spec.layout})")
    images, inputs = spec.images(root, split)
    if limit is not None:
        images = images[:max(0, limit)]
    return spec, images, inputs

