"""The engine side of the sweep (PipelineStages) reproduces CaRPipeline.run exactly: driving it through the
sweep with the config's own theta and eta gives the pipeline's label map, with the tiny test models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from car_desktop.engine.concepts import parse_concepts
from car_desktop.engine.config import preset
from car_desktop.engine.pipeline import CaRPipeline
from car_desktop.engine.tuning import PipelineStages
from car_desktop.evaluation.tuning import Setting, TuneImage, sweep


@pytest.mark.slow
@pytest.mark.parametrize("use_crf", [True, False])
def test_stages_through_the_sweep_give_the_pipelines_label_map(data_dir, use_crf):
    image = np.array(Image.open(data_dir / "chelsea.jpg").convert("RGB").resize((96, 64)))  # writable
    config = preset("objects", sam_mode="off", use_crf=use_crf, crf_in_subprocess=False)
    pipeline = CaRPipeline(config, test_models=True)
    text = "cat, dog | puppy, sky, grass"
    result = pipeline.run(image, text)
    concepts = parse_concepts(text)
    other = config.theta / 2   # a second setting, so the first one's caches are exercised by another
    def stages():
        return result.label_map.copy(), PipelineStages(pipeline, config, image, concepts)

    out = sweep([TuneImage("chelsea", stages)], len(concepts),
                [Setting(config.theta, config.eta), Setting(other, config.eta)])
    same = out.scores[0]
    assert same.confusion.sum() == image.shape[0] * image.shape[1]
    assert np.count_nonzero(same.confusion - np.diag(np.diag(same.confusion))) == 0   # every pixel agrees
    assert out.done.images == 1 and out.naive.images == 2
