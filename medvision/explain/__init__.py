"""Explanations: Grad-CAM heatmaps on the source images, and overlays people can look at.

- :mod:`medvision.explain.gradcam`: Captum's ``LayerGradCam`` on the right layer of
  each network, batched, upsampled to the input grid;
- :mod:`medvision.explain.heatmaps`: one heatmap per finding of a scored study,
  mapped back through the model's transform chain onto the DICOM pixel grid, with
  the check that the explanation's forward pass gave the scored logit;
- :mod:`medvision.explain.overlay`: the heatmap over the image with a burned-in
  legend (finding, probability, threshold, "not for primary diagnosis").
"""

from medvision.explain.gradcam import GradCam, GradCamOutput, explanation_layer
from medvision.explain.heatmaps import Heatmap, StudyExplanation, explain_study
from medvision.explain.overlay import legend_lines, render_overlay

__all__ = [
    "GradCam",
    "GradCamOutput",
    "Heatmap",
    "StudyExplanation",
    "explain_study",
    "explanation_layer",
    "legend_lines",
    "render_overlay",
]
