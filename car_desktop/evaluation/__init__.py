"""How good are the auto-labels: metrics against ground truth, reports, threshold calibration, and the
comparison of CaR's auto-labels with what a person reviewed. Never Qt, never torch.

* metrics.py: confusion matrix, IoU / mIoU (VOC convention), pixel accuracy, presence P / R / F1.
* labels.py: a COCO JSON or ``.cardb`` project as a ``LabelSet``; pairing images and categories; painting
  label maps. coco_ap.py: mask AP through pycocotools' COCOeval.
* evaluate.py: ``SegmentationEvaluator`` (image by image) and ``evaluate_label_sets`` -> ``EvalResult``;
  ``format_table`` for the terminal. report.py: the HTML report with matplotlib pictures.
* datasets.py: VOC 2012, COCO-Object and Pascal Context loaders with the paper's class names.
* tuning.py: the theta / eta (/ visual prompt) sweep over cached engine stages, and the tuned defaults a
  project stores for later runs.
* quality.py: each reviewed image's auto-label record (``annotations.auto_labels``: CaR's result before
  the person's edits) against the reviewed masks (the window's Quality panel).
"""
