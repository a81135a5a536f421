"""Errors of the engine core: one tree, translated once at the HTTP boundary.

    EngineError
    ├── ConfigError                 a config file or entry is invalid
    │   └── UnknownComponentError   a transform/network/engine name is not registered
    ├── InvalidInputError           the caller sent something unusable
    │   ├── InvalidImageError       not a volume, corrupt, wrong dimensionality
    │   ├── InvalidPointsError      too few, malformed or absurd points
    │   ├── InvalidNameError        a model name that cannot be a name (path separators, ..)
    │   └── InputTooLargeError      over the configured byte or voxel limits
    ├── ModelNotFoundError          no model of that name
    ├── ModelUnavailableError       the model is configured but failed to load
    ├── ModelLoadError              a model or version failed to build or warm up (what served still serves)
    ├── VersionExistsError          a version number that is already taken
    ├── WrongModelTypeError         the model cannot serve this kind of request
    ├── BackendUnavailableError     an optional runtime is missing
    ├── ResourceExhaustedError      the device ran out of memory: retry later
    ├── InferenceError              the model failed on valid input (a server fault)
    ├── TrainingStopped             a training stopped on request (a checkpoint was kept)
    └── TrainingError               a training run failed on the way (its last checkpoint is kept)
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "ConfigError",
    "UnknownComponentError",
    "InvalidInputError",
    "InvalidImageError",
    "InvalidPointsError",
    "InputTooLargeError",
    "InvalidNameError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ResourceExhaustedError",
    "VersionExistsError",
    "ModelUnavailableError",
    "WrongModelTypeError",
    "BackendUnavailableError",
    "InferenceError",
    "TrainingStopped",
    "TrainingError",
]


class EngineError(Exception):
    """Base of every error raised by the engine core."""


class ConfigError(EngineError):
    """A configuration file or entry is invalid; the message names file, entry and key."""


class UnknownComponentError(ConfigError):
    """A component name (transform, network, inferer, engine) is not in its registry."""


class InvalidInputError(EngineError):
    """The request's data cannot be used (the caller's fault)."""


class InvalidImageError(InvalidInputError):
    """The uploaded file is not a readable image of the expected kind."""


class InvalidPointsError(InvalidInputError):
    """The click points are missing, malformed or outside the image."""


class InputTooLargeError(InvalidInputError):
    """The input exceeds a configured size limit."""


class InvalidNameError(InvalidInputError):
    """A model name with path separators, ``..`` or characters a name cannot have."""


class ModelLoadError(EngineError):
    """A model or a version of it failed to build or warm up; whatever served before still serves."""


class VersionExistsError(EngineError):
    """A model already has a version of that number."""


class ResourceExhaustedError(EngineError):
    """The device ran out of memory for this request; a later retry may succeed."""


class ModelNotFoundError(EngineError):
    """No model with the requested name is configured."""


class ModelUnavailableError(EngineError):
    """The model is configured but is not loaded (its load failed)."""


class WrongModelTypeError(EngineError):
    """The model's type does not match the requested operation."""


class BackendUnavailableError(EngineError):
    """A backend needs an optional package or device that is not present."""


class InferenceError(EngineError):
    """Running the model failed on input that passed validation."""


class TrainingStopped(EngineError):
    """A training run stopped at a batch boundary because it was asked to; its last checkpoint is kept."""


class TrainingError(EngineError):
    """A training run failed on the way (a helper process died, say); its last checkpoint is kept."""
