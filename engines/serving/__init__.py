"""Model lifecycle while serving: the engine pool, immutable model versions and their deployment."""
