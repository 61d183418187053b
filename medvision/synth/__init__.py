"""Phantom generator: multi-site DICOM studies with ground truth for all four modalities."""
