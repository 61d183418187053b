"""DICOM input and output: reading studies, writing results."""
