"""The CaR engine: CLIP as RNN segmentation of typed concepts, SAM refinement, model management.

Never imports Qt. The public entry point is ``CaRPipeline`` (pipeline.py); configuration lives in
config.py, results in results.py, user-facing errors in errors.py. Video: reading clips and frame
folders (video_io.py), choosing key frames (keyframes.py), SAM 2 models (sam2_models.py) and
carrying masks between key frames (propagation.py).
"""
