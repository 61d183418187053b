"""The regulatory validation suite: protocols, per-subgroup statistics with CIs, the report.

Built up issue by issue; so far :mod:`validation.auroc` (AUROC with DeLong's
confidence interval).
"""
