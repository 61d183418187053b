"""Held-out evaluation of trained models: the figures a model card and a comparison report.

- :mod:`~medvision.evaluation.classification`: discrimination of a binary score
  (AUROC, AUPRC, sensitivity at a fixed specificity);
- :mod:`~medvision.evaluation.ct_detection`: CT nodule segmentation and detection
  (Dice per scan, per-nodule sensitivity, false positives per scan, FROC).
"""
