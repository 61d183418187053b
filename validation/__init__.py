"""The regulatory validation suite: protocols, per-subgroup statistics with CIs, the report.

Built up step by step; so far the statistics:

- :mod:`validation.auroc`: AUROC with DeLong's confidence interval;
- :mod:`validation.binary`: sensitivity, specificity, PPV and NPV with Wilson or
  Clopper-Pearson intervals, PPV and NPV at an intended-use prevalence, and a
  subgroup's difference from the rest with Newcombe's interval;
- :mod:`validation.calibration`: calibration slope and intercepts;
- :mod:`validation.bootstrap`: percentile intervals that resample patients, not cases;

:mod:`validation.protocol`, the pre-specified protocol file (YAML), checked key by
key, with examples for all four modalities in ``validation/protocols/``; and
:mod:`validation.subgroups`, which computes every figure overall and per subgroup
and intersection, with acceptance per criterion. Still to come: reading
``medvision predict`` CSVs against a manifest, the report (JSON, HTML, PDF) and
``medvision validate``.
"""
