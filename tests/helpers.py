"""Test factories: phantoms, stand-in networks, tiny model configs, the client crop and a threaded server."""

from __future__ import annotations

import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import uvicorn

from engines.config.model import ModelConfig
from engines.data.io import Geometry, Volume
from engines.transforms.points import extreme_points

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"
CT_DICOM_SERIES = SHARED_DATA / "totalsegmentator_example" / "example_ct_dicom"


def dicom_series_files() -> list[bytes]:
    """The 20 instances of the shared CT DICOM series (512x512, 0.98x0.98x2 mm), in file order."""
    if not CT_DICOM_SERIES.is_dir():
        pytest.skip("../shared/data/totalsegmentator_example is absent (real data lives beside the repo)")
    return [path.read_bytes() for path in sorted(CT_DICOM_SERIES.iterdir())]

GEOMETRY = Geometry((0.8, 0.9, 1.5), (-12.0, 30.5, 7.25), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def phantom(shape=(40, 48, 32), center=(18, 25, 15), radii=(8, 10, 6), geometry=GEOMETRY) -> tuple[Volume, np.ndarray]:
    """A bright ellipsoid (plus noise) in a dark volume, and its mask."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    dist = sum(((grid[d] - center[d]) / radii[d]) ** 2 for d in range(3))
    mask = (dist <= 1.0).astype(np.uint8)
    rng = np.random.RandomState(0)
    image = (mask * 100.0 + rng.normal(0, 5, shape) + 20).astype(np.float32)
    return Volume(image, geometry), mask


def phantom_points(mask: np.ndarray) -> list[list[int]]:
    """Exact extreme points of a mask, as a client would click them."""
    return extreme_points(mask > 0).astype(int).tolist()


def bright_annotation_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in DEXTR3D network: the object is whatever is brighter than mid-range in channel 0."""
    image = x[:, :1]
    return (image - (image.amax() + image.amin()) / 2) * 10.0


def bright_segmentation_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in 2-label network: label 1 for bright voxels in the lower half of axis 0, label 2 in the upper."""
    bright = x[:, :1] - (x[:, :1].amax() + x[:, :1].amin()) / 2
    half = torch.zeros_like(bright)
    half[:, :, x.shape[2] // 2 :] = 1.0
    background = -bright
    return torch.cat([background, bright * (1 - half), bright * half], dim=1) * 10.0


def bright_interactive_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in interactive network on the prompt encoding (image, mask, positive, negative, region).

    The object is what is bright (normalised image above 0.5), never where a negative prompt lies.
    """
    image, negative = x[:, :1], x[:, 3:4]
    logits = (image - 0.5) * 8.0
    return torch.where(negative > 0.1, torch.full_like(logits, -4.0), logits)


TINY_UNET = {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 2, "out_channels": 1, "channels": [4, 8],
                                      "strides": [2], "num_res_units": 0}}


def annotation_config(**overrides) -> dict:
    """A valid annotation model config dict (roi 32^3, tiny UNet)."""
    cfg = json.loads((REPO / "model_configs" / "annotation_mri_hippocampus.json").read_text())
    roi = [32, 32, 32]
    for spec in cfg["pre_transforms"]:
        if "roi" in spec["args"]:
            spec["args"]["roi"] = roi
    cfg.pop("ensemble", None)
    cfg.pop("datalist", None)  # relative to model_configs/, meaningless where tests write configs
    cfg.pop("exports", None)
    cfg["model_format"] = "pytorch"
    cfg.update(roi=roi, network=TINY_UNET, model_path="model.pt")
    cfg.update(overrides)
    return cfg


def segmentation_config(**overrides) -> dict:
    """A valid 2-label segmentation model config dict (tiny UNet, 32^3 windows)."""
    cfg = json.loads((REPO / "model_configs" / "segmentation_mri_hippocampus.json").read_text())
    net = json.loads(json.dumps(TINY_UNET))
    net["args"].update(in_channels=1, out_channels=3)
    cfg.pop("ensemble", None)
    cfg.pop("datalist", None)
    cfg.pop("exports", None)
    cfg["model_format"] = "pytorch"
    cfg.update(network=net, model_path="model.pt",
               inferer={"name": "SlidingWindowInferer", "args": {"roi_size": [32, 32, 32], "overlap": 0.25}})
    cfg.update(overrides)
    return cfg


def interactive_config(**overrides) -> dict:
    """A valid interactive (deepgrow) model config dict: tiny UNet on the 5-channel prompt encoding, roi 32^3."""
    net = json.loads(json.dumps(TINY_UNET))
    net["args"].update(in_channels=5, out_channels=1)
    cfg = {"type": "deepgrow", "labels": ["object"], "description": "any object from clicks, boxes, scribbles",
           "network": net, "model_path": "model.pt", "roi": [32, 32, 32],
           "interactive": {"margin": 0.25, "min_size_mm": 20.0, "max_zooms": 2}}
    cfg.update(overrides)
    return cfg


def standin_interactive_engine(name: str = "interactive_test", **overrides):
    """An interactive (deepgrow) engine whose 'network' is :func:`bright_interactive_net`."""
    from engines.tasks.interactive import InteractiveEngine

    return InteractiveEngine(name, ModelConfig.model_validate(interactive_config(**overrides)), bright_interactive_net)


def write_model(folder: Path, name: str, cfg: dict, seed: int = 0) -> Path:
    """Write a model config and matching random weights into ``folder``; returns the config path."""
    from engines.networks import build_network

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    network = build_network(ModelConfig.model_validate(cfg).network)
    torch.save(network.state_dict(), folder / cfg["model_path"])
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def write_phantom_datalist(folder: Path, n: int = 3) -> Path:
    """Phantom cases as NIfTI files (labels 1 and 2: two halves of the object) and a datalist.

    The last case is the validation split, the others the training split.
    """
    from engines.data.io import write_volume

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    items = []
    for i in range(n):
        volume, mask = phantom(center=(18 + i, 25 - i, 15))
        label = mask.copy()
        label[mask.shape[0] // 2:] *= 2
        (folder / f"images/c{i}.nii.gz").write_bytes(write_volume(volume.array, volume.geometry, dtype="float32"))
        (folder / f"labels/c{i}.nii.gz").write_bytes(write_volume(label, volume.geometry))
        items.append({"image": f"images/c{i}.nii.gz", "label": f"labels/c{i}.nii.gz"})
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": items[:-1], "validation": items[-1:]}))
    return datalist


def write_pool(folder: Path, entries: list[dict]) -> Path:
    """Write an engine_pool.json."""
    path = folder / "engine_pool.json"
    path.write_text(json.dumps(entries))
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Binary Dice."""
    a, b = a > 0, b > 0
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def client_crop(volume: Volume, points: list[list[int]], pad_mm=20.0, roi=128):
    """What NVIDIA's Python client does before uploading (protocol notes section 8.1).

    Returns the 128^3 volume it uploads, the points it sends, the crop start and crop size.
    """
    image = sitk.GetImageFromArray(volume.array.transpose())
    image.SetSpacing(volume.geometry.spacing)
    size = np.asarray(volume.shape)
    pts = np.asarray(points)
    vx_pad = np.array([int(pad_mm / s) for s in volume.geometry.spacing])
    low = np.maximum(pts.min(0) - vx_pad, 0)
    high = np.minimum(pts.max(0) + vx_pad, size - 1)
    crop = image[int(low[0]):int(high[0]), int(low[1]):int(high[1]), int(low[2]):int(high[2])]
    crop_size = np.asarray(crop.GetSize())
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([roi] * 3)
    resampler.SetOutputSpacing([float(s) for s in np.asarray(crop.GetSpacing()) * crop_size / roi])
    resampler.SetOutputOrigin(crop.GetOrigin())
    resampler.SetOutputDirection(crop.GetDirection())
    resampler.SetInterpolator(sitk.sitkLinear)
    out = resampler.Execute(crop)
    new_points = ((pts - low) * (roi / crop_size)).astype(int).tolist()
    geometry = Geometry(out.GetSpacing(), out.GetOrigin(), out.GetDirection())
    return Volume(sitk.GetArrayFromImage(out).transpose().copy(), geometry), new_points, low, crop_size


def client_uncrop(mask: np.ndarray, low, crop_size, shape) -> np.ndarray:
    """What the Python client does with the reply: nearest-neighbour back to the crop, pasted into zeros."""
    idx = [np.minimum((np.arange(n) * mask.shape[d] / n).astype(int), mask.shape[d] - 1) for d, n in enumerate(crop_size)]
    full = np.zeros(shape, np.uint8)
    full[low[0]:low[0] + crop_size[0], low[1]:low[1] + crop_size[1], low[2]:low[2] + crop_size[2]] = mask[np.ix_(*idx)]
    return full


@contextmanager
def serve_in_thread(app, **options) -> Iterator[int]:
    """Serve ``app`` with a real uvicorn server on a free local port (``options``: uvicorn's); yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on port {port}")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def require_runtime(fmt: str) -> None:
    """Skip the calling test, with the reason, when the runtime of export format ``fmt`` is not installed."""
    import pytest

    from engines.backends.base import has_module
    from engines.backends.formats import FORMATS

    spec = FORMATS[fmt]
    if not has_module(spec.package):
        pytest.skip(f"runtime '{spec.package}' for {fmt} is not installed (pip install 'aiaa-server[{spec.extra}]')")


async def call(value):
    """Await what an AsyncClient returned; a Client's value is already there."""
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def opened(session):
    """Enter a Session (``with``) or an AsyncSession (``async with``)."""
    if hasattr(session, "__aenter__"):
        async with session as s:
            yield s
    else:
        with session as s:
            yield s


def deepgrow_config(folder: Path) -> Path:
    """A tiny deepgrow model config (UNet of 4 and 8 channels, ROI 16^3) written to ``folder``."""
    cfg = {
        "type": "deepgrow", "labels": ["object"], "model_format": "pytorch", "model_path": "model.pt",
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 5, "out_channels": 1,
                                             "channels": [4, 8], "strides": [2], "num_res_units": 0}},
        "roi": [16, 16, 16], "interactive": {"margin": 0.25, "min_size_mm": 20.0, "max_zooms": 1},
    }
    path = folder / "deepgrow.json"
    path.write_text(json.dumps(cfg))
    return path


def phantom_datalist(folder: Path) -> Path:
    """An interactive datalist of three phantom cases (structures a, b and both): two training, one validation."""
    from engines.data.io import write_volume

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    items = []
    for i in range(3):
        volume, mask = phantom(shape=(24, 24, 16), center=(11 + i, 12, 8), radii=(5, 6, 4))
        label = mask.astype(np.uint8)
        label[:11 + i] *= 2
        (folder / f"images/c{i}.nii.gz").write_bytes(write_volume(volume.array, volume.geometry, dtype="float32"))
        (folder / f"labels/c{i}.nii.gz").write_bytes(write_volume(label, volume.geometry))
        items.append({"image": f"images/c{i}.nii.gz", "label": f"labels/c{i}.nii.gz"})
    path = folder / "phantom.json"
    path.write_text(json.dumps({"dataset": "phantom", "structures": {"a": [1], "b": [2], "both": [1, 2]},
                                "training": items[:2], "validation": items[2:]}))
    return path


def packed_phantom_train_config(folder: Path, max_steps: int) -> Path:
    """An interactive train config (``folder/train.json``) that trains from a sources pack of
    :func:`phantom_datalist`'s volumes (``folder/data``), made by ``aiaa pack-sources``; validation, which reads
    image files, is off."""
    from server.cli.main import main

    settings = {"interactive": True, "batch_size": 2, "max_steps": max_steps, "max_rounds": 1, "num_threads": 1,
                "min_object_voxels": 5, "datasets": [{"datalist": str(phantom_datalist(folder / "data"))}]}
    (folder / "pack_cfg.json").write_text(json.dumps(settings))
    assert main(["pack-sources", "--train-config", str(folder / "pack_cfg.json"), "-o", str(folder / "pack.npz")]) == 0
    path = folder / "train.json"
    path.write_text(json.dumps({**settings, "sources_pack": "pack.npz", "val_objects_per_dataset": 0}))
    return path


def train_beside_phantom(folder: Path, datalist: Path, extra: Path) -> dict:
    """Two interactive training steps of a tiny deepgrow model on ``datalist`` and ``extra`` (weight 0.5) named
    side by side in one train config, as a datalist made by a data tool is used; the run's metrics."""
    from engines.training.interactive import train_interactive

    (folder / "train.json").write_text(json.dumps({
        "interactive": True, "batch_size": 2, "max_steps": 2, "max_rounds": 1, "num_threads": 1,
        "min_object_voxels": 5, "val_objects_per_dataset": 0,
        "datasets": [{"datalist": str(datalist)}, {"datalist": str(extra), "weight": 0.5}]}))
    return train_interactive(deepgrow_config(folder), folder / "train.json", None, folder / "run",
                             progress=lambda _: None)
