"""The administration API: token check, jobs, datasets and model versions."""
