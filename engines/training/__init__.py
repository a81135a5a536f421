"""Training models from datalists with MONAI, alone or under torchrun."""
