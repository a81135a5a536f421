"""Reading a MONAI bundle folder for serving: its metadata, its inference config and its weights.

The config is read with :class:`monai.bundle.ConfigParser` and only the ids serving needs are
built (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``), lazily: the bundle's
evaluator, dataset and datalist are never built, and nothing in it runs at load but what those
ids reference. Our images arrive decoded, so the bundle's ``LoadImage(d)`` is dropped; results
are ours to write, so its ``SaveImage(d)`` is dropped too. A bundle config is code: only an
administrator adds one (see the README, "MONAI bundles").
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.config.model import check_overrides, load_json
from engines.errors import BackendUnavailableError, ConfigError

__all__ = [
    "BundleParts",
    "INSTALL_HINT",
    "REQUIRED_IDS",
    "check_monai_version",
    "find_config",
    "output_labels",
    "read_bundle",
]

log = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
REQUIRED_IDS = ("network_def", "preprocessing", "inferer")
INSTALL_HINT = "install extra bundle (pip install 'aiaa-server[bundle]')"
_LOADERS = ("LoadImaged", "LoadImage")
_WRITERS = ("SaveImaged", "SaveImage")
# pip names of optional packages that import under another name.
_IMPORT_NAMES = {"pytorch-ignite": "ignite", "pyyaml": "yaml", "scikit-image": "skimage", "pillow": "PIL",
                 "nibabel": "nibabel", "itk": "itk", "fire": "fire", "einops": "einops"}


@dataclass
class BundleParts:
    """What serving takes from a bundle: the network with its weights, the transforms and the description."""

    folder: Path
    config_file: Path
    metadata: dict[str, Any]
    network: torch.nn.Module
    preprocessing: Any
    inferer: Any
    postprocessing: Any
    labels: list[str]
    channels: int

    @property
    def version(self) -> str:
        """The bundle's own version (``metadata.json``), ``1`` when it names none."""
        return str(self.metadata.get("version") or "1")

    @property
    def description(self) -> str:
        """The bundle's description, else its task."""
        return str(self.metadata.get("description") or self.metadata.get("task") or "")


def find_config(folder: Path, stem: str = "inference") -> Path:
    """``configs/<stem>.json`` (or ``.yaml``/``.yml``) of a bundle folder.

    Raises:
        ConfigError: the folder or the config is missing.
    """
    if not folder.is_dir():
        raise ConfigError(f"bundle folder {folder} does not exist")
    for suffix in (".json", ".yaml", ".yml"):
        path = folder / "configs" / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise ConfigError(f"bundle {folder}: no configs/{stem}.json (or .yaml) found")


def check_monai_version(metadata: dict[str, Any], where: str) -> None:
    """Refuse a bundle written for a newer MONAI than the one installed (release numbers compared).

    Raises:
        ConfigError: ``monai_version`` is newer than ours, or not a version.
    """
    import monai
    from packaging.version import InvalidVersion, Version

    wanted = metadata.get("monai_version")
    if not wanted:
        return
    try:
        needed = Version(str(wanted))
    except InvalidVersion:
        raise ConfigError(f"{where}: key 'monai_version': {wanted!r} is not a version") from None
    ours = Version(monai.__version__)
    if needed.release > ours.release:
        raise ConfigError(f"{where}: the bundle needs MONAI {wanted} (monai_version); this server has MONAI "
                          f"{monai.__version__}: upgrade monai or use a bundle version made for it")


def output_labels(metadata: dict[str, Any]) -> list[str]:
    """Label names of ``network_data_format.outputs.pred.channel_def``, without a ``background`` channel 0."""
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    pred = outputs.get("pred") or next(iter(outputs.values()), {})
    channels = pred.get("channel_def") or {}
    names = [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
    if names and names[0].lower() == "background":
        names = names[1:]
    return names


def _input_format(metadata: dict[str, Any]) -> dict[str, Any]:
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    return inputs.get("image") or next(iter(inputs.values()), {})


def _missing_packages(metadata: dict[str, Any]) -> list[str]:
    names = list((metadata.get("optional_packages_version") or {}).keys())
    return [n for n in names if importlib.util.find_spec(_IMPORT_NAMES.get(n.lower(), n.replace("-", "_"))) is None]


def _parse_error(exc: Exception, where: str, what: str, missing: list[str]) -> Exception:
    """A clear engine error for a failure to build ``what``: a missing package, or the bundle's own fault."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ImportError) or type(cause).__name__ == "OptionalImportError":
            extra = f" (the bundle lists {', '.join(missing)} as optional packages, not installed)" if missing else ""
            return BackendUnavailableError(f"{where}: building '{what}' needs a package that is not installed: "
                                           f"{cause}{extra}: {INSTALL_HINT}, or install the package")
        cause = cause.__cause__ or cause.__context__
    return ConfigError(f"{where}: cannot build '{what}': {type(exc).__name__}: {str(exc).splitlines()[0]}")


def _drop(parser: Any, compose_id: str, targets: tuple[str, ...]) -> None:
    """Remove the transforms whose ``_target_`` is one of ``targets`` from a ``Compose`` id's list."""
    transforms_id = f"{compose_id}#transforms"
    try:
        transforms = parser[transforms_id]
    except (KeyError, TypeError, IndexError):
        return
    # ``"transforms": "@preprocessing_transforms"`` names the list elsewhere in the config.
    if isinstance(transforms, str) and transforms.startswith("@"):
        transforms_id = transforms[1:]
        transforms = parser[transforms_id]
    if not isinstance(transforms, list):
        return

    def kept(item: Any) -> bool:
        target = item.get("_target_", "") if isinstance(item, dict) else ""
        return not (isinstance(target, str) and target.rsplit(".", 1)[-1] in targets)

    parser[transforms_id] = [t for t in transforms if kept(t)]


def _without(chain: Any, names: tuple[str, ...]) -> None:
    """Remove built transforms whose class is one of ``names`` from a ``Compose`` (in place: Invertd shares it)."""
    transforms = getattr(chain, "transforms", None)
    if isinstance(transforms, (list, tuple)):
        chain.transforms = type(transforms)(t for t in transforms if type(t).__name__ not in names)


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights only (never pickled code): a plain state dict, or one under ``state_dict``/``model``."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable PyTorch weights file: {str(exc).splitlines()[0]}") from None
    for key in ("state_dict", "model", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return state


def _load_weights(network: torch.nn.Module, path: Path, target: str) -> None:
    if not path.is_file():
        raise ConfigError(f"bundle weights {path} not found (serving takes models/model.pt)")
    try:
        network.load_state_dict(_state_dict(path))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ConfigError(f"{path}: the weights do not match network_def ({target}): {detail}") from None


def read_bundle(folder: str | Path, overrides: dict[str, Any] | None = None, labels: list[str] | None = None) -> BundleParts:
    """Read a bundle for serving: metadata, inference config with ``overrides``, network with weights.

    Raises:
        ConfigError: missing files or ids, a newer ``monai_version``, non-literal overrides, weights
            that do not match ``network_def``, or a component the config cannot build.
        BackendUnavailableError: a package the bundle needs is not installed.
    """
    folder = Path(folder).resolve()
    config_file = find_config(folder)
    where = f"bundle {folder.name} ({config_file.relative_to(folder)})"
    try:
        check_overrides(overrides or {})
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    meta_file = folder / "configs" / "metadata.json"
    metadata = load_json(meta_file) if meta_file.is_file() else {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{meta_file}: must be a JSON object")
    check_monai_version(metadata, str(meta_file))
    fmt = str(_output_format(metadata) or "segmentation")
    if fmt != "segmentation":
        raise ConfigError(f"{meta_file}: the bundle's output format is '{fmt}'; only segmentation bundles are served")
    missing_packages = _missing_packages(metadata)
    if missing_packages:
        log.warning("bundle %s lists optional packages that are not installed: %s", folder.name, missing_packages)

    try:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(config_file))
    except ConfigError:
        raise
    except Exception as exc:
        raise _parse_error(exc, where, "the config file", missing_packages) from None
    missing = [i for i in REQUIRED_IDS if i not in parser]
    if missing:
        raise ConfigError(f"{where}: the config lacks {', '.join(missing)}; serving needs "
                          f"{', '.join(REQUIRED_IDS)} (and uses postprocessing when present)")
    parser["bundle_root"] = str(folder)
    for key, value in (overrides or {}).items():
        try:
            parser[key] = value
        except (KeyError, IndexError, TypeError, ValueError):
            raise ConfigError(f"{where}: override '{key}': no such id in the config") from None
    _drop(parser, "preprocessing", _LOADERS)
    has_post = "postprocessing" in parser
    if has_post:
        _drop(parser, "postprocessing", _WRITERS)

    parts: dict[str, Any] = {}
    for what in ("network_def", "preprocessing", "inferer", *(("postprocessing",) if has_post else ())):
        try:
            parts[what] = parser.get_parsed_content(what)
        except Exception as exc:
            raise _parse_error(exc, where, what, missing_packages) from None
    # Lists the config builds with an expression ("$@a + @b") were not edited above: filter the built chains.
    _without(parts["preprocessing"], _LOADERS)
    if "postprocessing" in parts:
        _without(parts["postprocessing"], _WRITERS)
    network = parts["network_def"]
    if not isinstance(network, torch.nn.Module):
        raise ConfigError(f"{where}: network_def is a {type(network).__name__}, not a network")
    _load_weights(network, folder / "models" / "model.pt", type(network).__name__)
    network.eval()
    post = parts.get("postprocessing") or _default_postprocessing(parts["preprocessing"])

    input_format = _input_format(metadata)
    net_def = parser["network_def"]
    declared = input_format.get("num_channels") or (net_def.get("in_channels") if isinstance(net_def, dict) else 1)
    channels = declared if isinstance(declared, int) and declared > 0 else 1
    names = list(labels or output_labels(metadata))
    if not names:
        raise ConfigError(f"{meta_file}: no label names (network_data_format.outputs.pred.channel_def); give "
                          "'labels' in the pool entry")
    return BundleParts(folder, config_file, metadata, network, parts["preprocessing"], parts["inferer"], post,
                       names, channels)


def _output_format(metadata: dict[str, Any]) -> str | None:
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    pred = outputs.get("pred") or next(iter(outputs.values()), {})
    return pred.get("format")


def _default_postprocessing(preprocessing: Any) -> Any:
    """Back onto the input's grid, then argmax: for a bundle without ``postprocessing``."""
    from monai.transforms import AsDiscreted, Compose, Invertd

    return Compose([Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False),
                    AsDiscreted(keys="pred", argmax=True)])
