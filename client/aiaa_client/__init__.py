"""A light client for AIAA-compatible annotation servers (httpx and numpy; no torch).

    from aiaa_client import Client
    with Client("http://127.0.0.1:5000") as client:
        result = client.dextr3d("annotation_mri_hippocampus", "image.nii.gz", points)
        result.mask, result.affine, result.params["timings"]
        result.save("mask.nii.gz")

        with client.session("image.nii.gz") as session:        # interactive annotation
            obj = session.interactive("deepgrow_model")
            obj.add_point([120, 96, 40]); obj.add_point([130, 90, 40], positive=False); obj.undo()
            obj.mask
"""

from aiaa_client._client import AsyncClient, AsyncSession, Client, Session
from aiaa_client._errors import (
    AIAAError,
    BadRequest,
    Busy,
    ConnectionFailed,
    NotFound,
    ProtocolError,
    ServerError,
    SessionExpired,
    Timeout,
    Unauthorized,
)
from aiaa_client._interactive import Interactive
from aiaa_client._nifti import read_nifti, write_nifti
from aiaa_client._protocol import RetryPolicy
from aiaa_client._types import Job, Result

__version__ = "0.1.0"

__all__ = [
    "AIAAError",
    "AsyncClient",
    "AsyncSession",
    "BadRequest",
    "Busy",
    "Client",
    "ConnectionFailed",
    "Interactive",
    "Job",
    "NotFound",
    "ProtocolError",
    "Result",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionExpired",
    "Timeout",
    "Unauthorized",
    "__version__",
    "read_nifti",
    "write_nifti",
]
