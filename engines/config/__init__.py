"""Validated configuration schemas: the engine pool, model configs, train configs and Clara's train config."""
