"""What the client returns: inference results and job records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiaa_client._nifti import is_nifti, read_nifti, write_nifti

__all__ = ["FINAL_STATES", "JOB_STATES", "Job", "Result"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class Result:
    """One inference reply: the server's ``params`` JSON and, when the model returns an image, the mask.

    ``params`` holds what the server says about the result (e.g. ``points``, per-stage ``timings``
    in ms). ``data``/``filename`` are the file as sent; ``mask`` (uint8, indexed ``[i, j, k]``)
    and ``affine`` (voxel to RAS) are decoded from it, or pasted back after a client-side crop.
    """

    def __init__(self, params: dict[str, Any], data: bytes | None = None, filename: str | None = None,
                 mask: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
        self.params = params
        self.data = data
        self.filename = filename
        self._mask = mask
        self._affine = affine

    def __repr__(self) -> str:
        return f"Result(filename={self.filename!r}, params={self.params!r})"

    @property
    def has_image(self) -> bool:
        """Whether the reply carried an image (a JSON-only reply has none)."""
        return self._mask is not None or self.data is not None

    @property
    def decodable(self) -> bool:
        """Whether the client can decode the image (NIfTI-1)."""
        return self._mask is not None or (self.data is not None and is_nifti(self.data))

    def _decode(self) -> None:
        if self._mask is not None:
            return
        if self.data is None:
            raise ValueError("this reply has no image (a JSON-only result): see .params")
        if not is_nifti(self.data):
            raise ValueError(f"the client decodes NIfTI results only; {self.filename!r} is not one: .save() it, "
                             "or ask for params={'result_extension': '.nii.gz'}")
        array, self._affine = read_nifti(self.data)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("the result holds values outside 0..255 and cannot be a uint8 mask")
        self._mask = array.astype(np.uint8)

    @property
    def mask(self) -> np.ndarray:
        """The mask as uint8, indexed ``[i, j, k]`` (label values 1..N)."""
        self._decode()
        return self._mask

    @property
    def affine(self) -> np.ndarray:
        """The mask's voxel-to-RAS affine (NIfTI/nibabel convention)."""
        self._decode()
        return self._affine

    def save(self, path: str | Path) -> Path:
        """Write the result: the server's file as is when the suffix matches, else NIfTI from the mask."""
        path = Path(path)
        name = path.name.lower()
        if self.data is not None and self.filename and _suffix(name) == _suffix(self.filename.lower()):
            path.write_bytes(self.data)
        elif name.endswith(NIFTI_SUFFIXES):
            path.write_bytes(write_nifti(self.mask, self.affine, compress=name.endswith(".gz")))
        elif self.data is not None and self._mask is None:
            raise ValueError(f"the result is a {_suffix(self.filename or '')!r} file; save it with that suffix")
        else:
            raise ValueError("save a mask as .nii.gz or .nii")
        return path

    def to_nibabel(self):
        """The mask as a ``nibabel.Nifti1Image`` (needs the ``nifti`` extra)."""
        import nibabel

        return nibabel.Nifti1Image(self.mask, self.affine)


def _suffix(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".dcm"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
# States a job leaves only when someone acts (resume); following a job stops there.
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


@dataclass(frozen=True)
class Job:
    """A background job as ``GET /admin/jobs/{id}`` describes it; ``raw`` keeps every field sent."""

    id: str
    state: str
    kind: str | None = None
    model: str | None = None
    progress: float = 0.0
    epoch: int | None = None
    epochs: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    eta_s: float | None = None
    created_at: Any = None
    started_at: Any = None
    finished_at: Any = None
    error: str | None = None
    pid: int | None = None
    result: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """Build from the server's JSON (unknown keys stay in ``raw``)."""
        job_id = data.get("id", data.get("job_id"))
        if job_id is None or "state" not in data:
            raise ValueError(f"a job record needs 'id' and 'state', got keys {sorted(data)}")
        return cls(
            id=str(job_id), state=str(data["state"]), kind=data.get("kind"), model=data.get("model"),
            progress=float(data.get("progress") or 0.0), epoch=data.get("epoch"), epochs=data.get("epochs"),
            metrics=dict(data.get("metrics") or {}), eta_s=data.get("eta_s"), created_at=data.get("created_at"),
            started_at=data.get("started_at"), finished_at=data.get("finished_at"), error=data.get("error"),
            pid=data.get("pid"), result=data.get("result"), raw=dict(data),
        )

    @property
    def done(self) -> bool:
        """Whether the job stopped (succeeded, failed, cancelled or interrupted)."""
        return self.state in FINAL_STATES
