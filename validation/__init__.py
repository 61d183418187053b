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
and intersection, with acceptance per criterion; and :mod:`validation.inputs`,
which joins a predictions CSV to the manifest and reports every mismatch. Still
to come: the report (JSON, HTML, PDF), ``medvision validate`` and the speed
benchmark.
"""
