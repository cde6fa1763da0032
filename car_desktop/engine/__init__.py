"""The CaR engine: CLIP as RNN segmentation of typed concepts, SAM refinement, model management.

Never imports Qt. The public entry point is ``CaRPipeline`` (pipeline.py); configuration lives in
config.py, results in results.py, user-facing errors in errors.py.
"""
