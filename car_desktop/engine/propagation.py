"""SAM 2 carries object masks from key frames through a clip: the plan of runs, and running them.

**The plan** (``plan_runs``). Every object (a concept of the clip) has key frames: frames where CaR
found it (PRESENT) or found it absent (ABSENT), and frames where a person edited its mask (EDITED).
Each other frame takes its mask from one key frame. Between two frames where CaR found the object,
the nearer one gives it (ties go forward). Between a found key and an absent one, the found key
carries the object all the way, and SAM 2 decides where it leaves; between two absent keys nothing
is carried. A person's edit carries the object forward up to its next key frame (an edit
re-propagates "from that frame onward") and claims nothing backward over a found key. Before the
first key and after the last, the key carries the object to the clip's ends unless it is absent there.
Frames that take their mask from the same key in the same direction form a run; the objects leaving
one key frame in one direction share one ``Run`` (CaR key frames are shared by all the concepts of a
run), so a frame is encoded once for all of them.

**A run** (``Propagator.run``) is SAM 2's video predictor over the run's frames only, in the order
they are tracked (a backward run is a forward run over the frames in reverse order: SAM 2's own
reverse mode mirrors time the same way), seeded with each object's key-frame mask, so every frame's
mask comes from exactly one key frame, and an object's result on a frame does not depend on how far
its run was taken beyond it. Memory stays bounded whatever the clip's length: frames are decoded on
demand, a block at a time, and resized to the model's input (never the whole clip, unlike SAM 2's own
loader, which reads every frame into one tensor); SAM 2's state lives on the CPU (``offload_*``); and
the per-frame memory of frames the model can no longer attend to (more than its memory window behind)
is dropped as the run moves on. Each frame comes back (``PropagatedFrame``) with one boolean mask per
object at the clip's resolution (empty where SAM 2 lost the object) and SAM 2's presence score.
Cancellation is checked between frames.

SAM 2's video predictor only reads frames through ``load_video_frames``; ``init_state`` is called with
that loader swapped for the lazy frames of the run, and its progress bar is silenced, both while a run
holds the module lock. Never Qt.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from .cancel import CancelToken, check
from .sam2_models import Sam2Handle
from .video_io import FrameSource

log = logging.getLogger(__name__)

#: Frames decoded and resized together (one seek each): bounds the frames held for a run.
BLOCK = 16
_IMG_MEAN = (0.485, 0.456, 0.406)   # SAM 2's input normalisation
_IMG_STD = (0.229, 0.224, 0.225)
_SAM2_LOCK = threading.RLock()


@dataclass(frozen=True)
class Run:
    """Frames that take their masks from one key frame, tracked in one direction.

    ``step`` is +1 (forward) or -1 (backward); the run covers ``key + step``, ``key + 2 step``, ... up
    to ``stop`` (exclusive). ``stops`` gives each object (by id) its own end, at most ``stop``: an
    object's masks are used up to its end only (tracking it further costs little, the frames are
    encoded for the others anyway).
    """

    key: int
    step: int
    stop: int
    stops: tuple[tuple[int, int], ...]

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(obj for obj, _ in self.stops)

    @property
    def frames(self) -> range:
        return range(self.key + self.step, self.stop, self.step)

    def frames_of(self, obj: int) -> range:
        return range(self.key + self.step, dict(self.stops)[obj], self.step)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class PropagatedFrame:
    """One frame of a run: each object's mask (bool, clip resolution; empty when lost) and presence score."""

    frame: int
    from_frame: int
    masks: dict[int, np.ndarray]
    scores: dict[int, float]


# ------------------------------------------------------------------------------------------ the plan
PRESENT, ABSENT, EDITED = "present", "absent", "edited"


def assign_frames(frame_count: int, keys: Mapping[int, str]) -> dict[int, tuple[int, int]]:
    """frame -> (key frame, step) for one object whose key frames are ``keys`` (frame -> PRESENT,
    ABSENT or EDITED); see the module docstring. Key frames themselves are not in the result."""
    marks = sorted((k, kind) for k, kind in keys.items() if 0 <= k < frame_count)
    out: dict[int, tuple[int, int]] = {}
    if not marks:
        return out

    def claim(frames: range, key: int, step: int) -> None:
        for t in frames:
            out[t] = (key, step)

    first, kind = marks[0]
    if kind != ABSENT:
        claim(range(first), first, -1)
    for (a, kind_a), (b, kind_b) in itertools.pairwise(marks):
        between = range(a + 1, b)
        if kind_a == ABSENT:
            if kind_b != ABSENT:
                claim(between, b, -1)
        elif kind_a == EDITED or kind_b != PRESENT:
            claim(between, a, +1)          # an edit carries forward; nothing claims back over a found key
        else:
            middle = a + (b - a) // 2      # two keys where CaR found it: the nearer one, ties forward
            claim(range(a + 1, middle + 1), a, +1)
            claim(range(middle + 1, b), b, -1)
    last, kind = marks[-1]
    if kind != ABSENT:
        claim(range(last + 1, frame_count), last, +1)
    return out


def object_runs(frame_count: int, keys: Mapping[int, str]) -> list[tuple[int, int, int]]:
    """(key, step, stop) of one object's runs, from ``assign_frames``."""
    spans: dict[tuple[int, int], list[int]] = {}
    for t, src in assign_frames(frame_count, keys).items():
        spans.setdefault(src, []).append(t)
    runs = []
    for (key, step), frames in spans.items():
        far = max(frames) if step > 0 else min(frames)
        runs.append((key, step, far + step))
    return sorted(runs)


def plan_runs(frame_count: int, keys: Mapping[int, Mapping[int, str]]) -> list[Run]:
    """The runs that give every frame of every object (``keys``: object -> its key frames) its mask;
    the objects leaving one key frame in one direction share a run. Ordered by key frame, backward
    before forward."""
    shared: dict[tuple[int, int], dict[int, int]] = {}
    for obj in sorted(keys):
        for key, step, stop in object_runs(frame_count, keys[obj]):
            shared.setdefault((key, step), {})[obj] = stop
    runs = []
    for (key, step), stops in sorted(shared.items()):
        far = max(stops.values()) if step > 0 else min(stops.values())
        runs.append(Run(key, step, far, tuple(sorted(stops.items()))))
    return runs


# ------------------------------------------------------------------------------------- lazy frames
class _RunFrames:
    """The frames of one run as SAM 2 reads them: ``frames[i]`` is the i-th frame in tracking order,
    resized to the model's square input and normalised, decoded a block at a time on first use."""

    def __init__(self, source: FrameSource, order: Sequence[int], size: int, cancel: CancelToken | None) -> None:
        self.source, self.order, self.size, self.cancel = source, list(order), size, cancel
        self._block: dict[int, np.ndarray] = {}
        self._mean = torch.tensor(_IMG_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(_IMG_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self._block:
            check(self.cancel)
            wanted = self.order[i:i + BLOCK]
            self._block = {}
            for frame_index in sorted(wanted):  # ascending: sequential decoding, one seek
                image = self.source.read(frame_index, copy=False)
                small = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
                self._block[i + wanted.index(frame_index)] = small
        tensor = torch.from_numpy(self._block[i]).permute(2, 0, 1).float().div_(255.0)
        return (tensor - self._mean) / self._std


@contextlib.contextmanager
def _swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _quiet(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    return iterable


# ------------------------------------------------------------------------------------------ running
class Propagator:
    """Runs ``Run``s of one clip with one SAM 2 model (see the module docstring)."""

    def __init__(self, handle: Sam2Handle, source: FrameSource) -> None:
        self.handle = handle
        self.source = source
        model = handle.predictor
        # Frames further back than this are never attended to again (memory bank, object pointers).
        self.window = max(int(model.num_maskmem), int(getattr(model, "max_obj_ptrs_in_encoder", 16))) + 1

    def run(self, run: Run, seeds: Mapping[int, np.ndarray],
            cancel: CancelToken | None = None) -> Iterator[PropagatedFrame]:
        """Track ``run.obj_ids`` (each seeded with its key-frame mask in ``seeds``) through the run's
        frames; yields one ``PropagatedFrame`` per frame, in tracking order."""
        objs = [o for o in run.obj_ids if o in seeds]
        if not objs or not len(run):
            return
        import sam2.sam2_video_predictor as svp

        predictor = self.handle.predictor
        info = self.source.info
        order = [run.key, *run.frames]
        frames = _RunFrames(self.source, order, self.handle.image_size, cancel)
        with _SAM2_LOCK, _swapped(svp, "tqdm", _quiet):
            with _swapped(svp, "load_video_frames", lambda **_: (frames, info.height, info.width)):
                state = predictor.init_state("", offload_video_to_cpu=True, offload_state_to_cpu=True)
            for obj in objs:
                mask = np.asarray(seeds[obj], bool)
                if mask.shape != (info.height, info.width):
                    raise ValueError(f"seed mask of object {obj} is {mask.shape}, "
                                     f"the clip is {(info.height, info.width)}")
                predictor.add_new_mask(state, frame_idx=0, obj_id=obj, mask=torch.from_numpy(mask))
            for idx, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=0):
                if idx == 0:
                    continue
                check(cancel)
                masks = (logits[:, 0] > 0).cpu().numpy()
                scores = {}
                for k, obj in enumerate(obj_ids):
                    out = state["output_dict_per_obj"][k]["non_cond_frame_outputs"].get(idx)
                    logit = float(out["object_score_logits"].float().flatten()[0]) if out is not None else 0.0
                    scores[int(obj)] = float(torch.sigmoid(torch.tensor(logit)))
                yield PropagatedFrame(order[idx], run.key, {int(o): masks[k] for k, o in enumerate(obj_ids)}, scores)
                self._forget(state, idx)

    def _forget(self, state: dict[str, Any], idx: int) -> None:
        """Drop the per-frame outputs SAM 2 will not attend to again (keeps memory flat on long runs)."""
        old = idx - self.window
        if old <= 0:
            return
        for per_obj in state["output_dict_per_obj"].values():
            per_obj["non_cond_frame_outputs"].pop(old, None)
        for tracked in state["frames_tracked_per_obj"].values():
            tracked.pop(old, None)
