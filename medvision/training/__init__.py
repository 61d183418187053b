"""Training: imbalance-aware loss weights and samplers (losses themselves come from MONAI)."""
