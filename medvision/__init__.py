"""medvision: DICOM-in, findings-out medical-imaging analysis with an auditable trail."""

__version__ = "0.1.0"
