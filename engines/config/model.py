"""Validated schemas for the Clara-format ``engine_pool.json`` and ``model_configs/*.json``.

Unknown keys and bad values are errors; every message names the file, the entry
and the key so that an administrator can fix the config without reading code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.errors import ConfigError

__all__ = [
    "BUNDLE_ENGINE",
    "BatchingSpec",
    "ComponentSpec",
    "EnsembleMember",
    "InteractiveSpec",
    "ModelConfig",
    "PoolEntry",
    "WriterSpec",
    "check_overrides",
    "load_json",
    "load_model_config",
    "parse_pool",
    "refuse_expressions",
]

ModelType = Literal["annotation", "segmentation", "deepgrow"]
ModelFormat = Literal["pytorch", "torchscript", "onnx", "openvino", "tensorrt", "auto"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
# Formats whose model_path is an exported artifact rather than a checkpoint for ``network``.
ARTIFACT_FORMATS = ("torchscript", "onnx", "openvino", "tensorrt")

# Channels of the interactive prompt encoding (len(engines.transforms.prompts.CHANNELS); a test checks).
INTERACTIVE_IN_CHANNELS = 5

# MONAI bundle syntax ($ eval, @ reference, % macro) is refused: configs a server loads
# must not run code.
_FORBIDDEN_PREFIXES = ("$", "@", "%")

# The Clara-style class/module of the engine kind that serves MONAI bundle folders.
BUNDLE_ENGINE = ("BundleEngine", "engines.tasks.bundle")


def refuse_expressions(value: Any, where: str = "") -> None:
    """Raise ``ValueError`` for any string starting with ``$``, ``@`` or ``%`` inside ``value``.

    Dictionary keys starting with ``_`` (``_target_``, ``_requires_``, ...) are refused too:
    through MONAI's config parser they would name code to run.
    """
    if isinstance(value, str) and value.startswith(_FORBIDDEN_PREFIXES):
        raise ValueError(f"expressions and references are not allowed{where} ({value!r}): give literal values")
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("_"):
                raise ValueError(f"key {key!r}{where} is not allowed: it would name code to run")
            refuse_expressions(item, where)
    elif isinstance(value, list):
        for item in value:
            refuse_expressions(item, where)


def check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate bundle config overrides: ``{"config#id": literal value}``, no code anywhere.

    Raises:
        ValueError: an empty id, an id part starting with ``_``, or a value that is an
            expression, a reference, a macro or holds a ``_target_``-like key.
    """
    for key, value in overrides.items():
        parts = key.replace("::", "#").split("#")
        if not key or any(not part for part in parts):
            raise ValueError(f"override id {key!r} must be a config id such as 'inferer#roi_size'")
        if any(part.startswith("_") for part in parts):
            raise ValueError(f"override id {key!r} is not allowed: ids starting with '_' name code to run")
        refuse_expressions(value, f" in override {key!r}")
    return overrides


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ComponentSpec(_Strict):
    """A named component with keyword arguments, e.g. a transform or a network."""

    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("args")
    @classmethod
    def _no_expressions(cls, args: dict[str, Any]) -> dict[str, Any]:
        refuse_expressions(args)
        return args


class EnsembleMember(_Strict):
    """One network of an ensemble: its weights, and its architecture where it differs from the model's."""

    model_path: str
    network: ComponentSpec | None = None


class WriterArgs(_Strict):
    """How a batch-inference writer encodes each mask (``field`` is Clara's, kept for compatibility)."""

    suffix: Literal[".nii.gz", ".nii", ".mha", ".nrrd"] = ".nii.gz"
    dtype: Literal["uint8", "uint16", "int16", "int32", "float32"] = "uint8"
    field: str = "pred"


class WriterSpec(_Strict):
    """A writer of ``aiaa infer``: the mask on the input's grid, one file per input, named after it."""

    name: Literal["WriteNifti", "writers.WriteNifti", "WriteImage"]
    args: WriterArgs = WriterArgs()

    @model_validator(mode="after")
    def _nifti_suffix(self) -> WriterSpec:
        if "Nifti" in self.name and not self.args.suffix.startswith(".nii"):
            raise ValueError(f"writer '{self.name}' writes NIfTI: suffix must be .nii.gz or .nii (or use WriteImage)")
        return self


class InteractiveSpec(_Strict):
    """How an interactive (``deepgrow``) model crops: margin around the prompts and mask, minimum size, zoom-out."""

    margin: float = Field(0.25, ge=0.0, le=4.0)  # of the prompts' extent, on each side
    min_size_mm: float = Field(40.0, gt=0.0, le=2000.0)  # smallest crop per axis
    max_zooms: int = Field(2, ge=0, le=8)  # widen and predict again while the object reaches the crop's border
    zoom_factor: float = Field(1.6, gt=1.0, le=4.0)
    local_corrections: bool = False  # a click on a mask changes only the region connected to it


class BatchingSpec(_Strict):
    """Micro-batching of concurrent calls (``engines.serving.batching``): up to ``max_batch`` inputs of one
    shape, each waiting at most ``max_wait_ms`` for companions, run as one backend call."""

    max_batch: int = Field(8, ge=2, le=64)
    max_wait_ms: float = Field(5.0, ge=0.0, le=100.0)


class ModelConfig(_Strict):
    """How one model runs (``model_configs/<name>.json``), Clara keys plus what we need.

    Paths (``model_path``) are relative to the config file's folder. Instead of one
    ``model_path``, an ``ensemble`` lists several networks whose outputs are averaged.
    """

    version: str = "1"
    type: ModelType
    labels: list[str] = Field(min_length=1)
    description: str = ""
    # ``auto`` serves the fastest exported artifact whose report passed on this hardware (see
    # ``exports``), else the PyTorch checkpoint; Clara's ``trtmodel`` means ``tensorrt``.
    model_format: ModelFormat = "pytorch"
    precision: Precision = "fp32"
    exports: list[str] = Field(default_factory=list)  # folders of `aiaa export` (each with export_report.json)
    torch_compile: bool = False  # PyTorch backend: run through torch.compile
    threads: int | None = Field(None, ge=1, le=256)  # intra-op threads of ONNX Runtime / OpenVINO
    datalist: str | None = None  # validation cases for `aiaa export` parity checks
    model_path: str | None = None
    network: ComponentSpec | None = None
    ensemble: list[EnsembleMember] = Field(default_factory=list)
    thresh: float = Field(0.5, gt=0.0, lt=1.0)
    input_nodes: dict[str, str] | list[str] | None = None
    output_nodes: dict[str, str] | list[str] | None = None
    batch_size: int = Field(1, ge=1, le=64)
    pre_transforms: list[ComponentSpec] = Field(default_factory=list)
    inferer: ComponentSpec = ComponentSpec(name="SimpleInferer")
    post_transforms: list[ComponentSpec] = Field(default_factory=list)
    # Test-time augmentation: also run on copies flipped along these spatial axes (0..2) and average.
    tta_flips: list[list[int]] = Field(default_factory=list, max_length=7)
    roi: list[int] | None = None
    padding: float | None = Field(None, ge=0.0)
    sigma: float | None = Field(None, gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    interactive: InteractiveSpec | None = None  # deepgrow models only (defaults when absent)
    # Concurrent calls batched through the network (off when absent): pays where the backend gains from
    # a batch (a GPU); measure first (bench/load_test.py --batching).
    batching: BatchingSpec | None = None
    # Batch inference (``aiaa infer``) output; empty means one NIfTI mask per input.
    writers: list[WriterSpec] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("model_format", mode="before")
    @classmethod
    def _clara_format_names(cls, value: Any) -> Any:
        return "tensorrt" if value == "trtmodel" else value

    @field_validator("tta_flips")
    @classmethod
    def _flip_axes(cls, flips: list[list[int]]) -> list[list[int]]:
        for axes in flips:
            if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
                raise ValueError(f"each entry of tta_flips must be a non-empty set of distinct spatial axes among "
                                 f"0, 1, 2; got {axes}")
        if len({tuple(sorted(a)) for a in flips}) != len(flips):
            raise ValueError("tta_flips repeat an entry")
        return flips

    @field_validator("roi")
    @classmethod
    def _roi_3d(cls, roi: list[int] | None) -> list[int] | None:
        if roi is not None and (len(roi) != 3 or any(r < 8 or r > 512 for r in roi)):
            raise ValueError("roi must be three sizes between 8 and 512")
        return roi

    @model_validator(mode="after")
    def _type_requirements(self) -> ModelConfig:
        if (self.model_path is None) == (not self.ensemble):
            raise ValueError("give either 'model_path' or an 'ensemble' of at least two members, not both")
        if self.ensemble and len(self.ensemble) < 2:
            raise ValueError("an 'ensemble' needs at least two members")
        if self.model_format in ("pytorch", "auto") and any(m.network is None for m in self.members()):
            raise ValueError(f"model_format '{self.model_format}' needs a 'network' definition (for every ensemble "
                             "member)")
        if self.exports and self.model_format != "auto":
            raise ValueError("'exports' are chosen from with model_format 'auto' only")
        if self.type == "deepgrow" and self.roi is None:
            raise ValueError("deepgrow models need 'roi'")
        if self.type == "annotation":
            missing = [k for k in ("roi", "padding", "sigma") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"annotation models need {', '.join(missing)}")
            # The advertised roi/padding/sigma (clients pre-crop with them) must be what runs.
            for spec in self.pre_transforms:
                for key in ("roi", "padding", "sigma"):
                    if key in spec.args and spec.args[key] != getattr(self, key):
                        raise ValueError(
                            f"pre_transform '{spec.name}' has {key}={spec.args[key]!r} but the model's {key} is "
                            f"{getattr(self, key)!r}"
                        )
        if self.type == "deepgrow":
            self._interactive_requirements()
        elif self.interactive is not None:
            raise ValueError(f"'interactive' applies to deepgrow models only, not to {self.type} models")
        return self

    def _interactive_requirements(self) -> None:
        if self.roi is None:
            raise ValueError("deepgrow (interactive) models need 'roi': the size the crop is resampled to")
        for member in self.members():
            args = member.network.args if member.network is not None else {}
            if args.get("in_channels", INTERACTIVE_IN_CHANNELS) != INTERACTIVE_IN_CHANNELS:
                raise ValueError(f"an interactive network takes {INTERACTIVE_IN_CHANNELS} input channels (image, "
                                 f"mask, positive, negative, region); 'in_channels' is {args['in_channels']}")
            if args.get("out_channels", 1) != 1:
                raise ValueError(f"an interactive network has 1 output channel (the object's logits); "
                                 f"'out_channels' is {args['out_channels']}")

    def members(self) -> list[ModelConfig]:
        """One single-network config per ensemble member; just this config without an ensemble."""
        if not self.ensemble:
            return [self]
        return [
            self.model_copy(update={"model_path": m.model_path, "network": m.network or self.network, "ensemble": []})
            for m in self.ensemble
        ]


class PoolEntry(_Strict):
    """One model of ``engine_pool.json`` (Clara format), or a MONAI bundle folder.

    A bundle entry gives ``bundle`` (the folder, relative to the pool file) and optional
    ``overrides`` (``{"config#id": literal value}``) instead of ``class``/``module``/``config_file``;
    those then default to the bundle engine and the folder.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    # Required unless ``bundle`` is given (then set by validation): never None after it.
    class_: str | None = Field(None, alias="class")
    module: str | None = None
    config_file: str | None = None
    bundle: str | None = Field(None, min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    # A bundle's network through a verified export (``aiaa export --config <bundle>``): 'pytorch', 'auto' or a format.
    model_format: str = "pytorch"
    exports: list[str] = Field(default_factory=list)
    labels: list[str] | None = None
    description: str | None = None
    version: str | None = None
    type: ModelType | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("overrides")
    @classmethod
    def _literal_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return check_overrides(overrides)

    @model_validator(mode="after")
    def _bundle_or_clara(self) -> PoolEntry:
        if self.bundle is None:
            missing = [k for k, v in (("class", self.class_), ("module", self.module),
                                      ("config_file", self.config_file)) if v is None]
            if missing:
                raise ValueError(f"give {', '.join(missing)} (or 'bundle', a MONAI bundle folder)")
            if self.overrides or self.exports or self.model_format != "pytorch":
                raise ValueError("'overrides', 'model_format' and 'exports' apply to a 'bundle' entry only (a model "
                                 "config has its own)")
            return self
        if self.config_file is not None and self.config_file != self.bundle:
            raise ValueError("a 'bundle' entry takes no 'config_file': the bundle folder holds its configs")
        if (self.class_, self.module) not in ((None, None), BUNDLE_ENGINE):
            raise ValueError(f"a 'bundle' entry is served by {BUNDLE_ENGINE[0]}/{BUNDLE_ENGINE[1]}; leave out "
                             "'class' and 'module'")
        self.class_, self.module = BUNDLE_ENGINE
        self.config_file = self.bundle
        return self


def load_json(path: str | Path) -> Any:
    """Read a JSON file, turning I/O and syntax problems into :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def describe_validation_error(where: str, exc: ValidationError) -> str:
    """One readable line per problem: ``<where>: key 'a.b': message``."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{where}: key '{key}': {msg}")
    return "; ".join(problems)


def load_model_config(path: str | Path, entry: str | None = None) -> ModelConfig:
    """Load and validate a model config file.

    Raises:
        ConfigError: unreadable file or invalid content (message names file, entry, key).
    """
    where = f"{path}" + (f" (entry '{entry}')" if entry else "")
    data = load_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a model config must be a JSON object")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(where, exc)) from None


def parse_pool(path: str | Path) -> list[PoolEntry | ConfigError]:
    """Parse ``engine_pool.json``: one validated entry, or the error that entry has, per item.

    A broken entry does not stop the others; a file that is not a JSON list does.
    """
    data = load_json(path)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: engine_pool.json must be a JSON list of model entries")
    result: list[PoolEntry | ConfigError] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{path}: entry {index}" + (f" ('{name}')" if name else "")
        if not isinstance(item, dict):
            result.append(ConfigError(f"{where}: must be a JSON object"))
            continue
        try:
            entry = PoolEntry.model_validate(item)
        except ValidationError as exc:
            result.append(ConfigError(describe_validation_error(where, exc)))
            continue
        if entry.name in seen:
            result.append(ConfigError(f"{where}: key 'name': duplicate model name '{entry.name}'"))
            continue
        seen.add(entry.name)
        result.append(entry)
    return result
