"""CaR Desktop: segment typed concepts with CLIP as RNN and SAM, correct masks by hand, export COCO.

The package splits into ``engine`` (models, never Qt), ``annotations`` (the project store and COCO,
never Qt or torch), ``ui`` (PySide6) and ``cli`` (headless commands). The version lives here only.
"""

__version__ = "0.1.0"
