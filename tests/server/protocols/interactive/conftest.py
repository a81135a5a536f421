"""A session holding the phantom, on the app with stand-in interactive models (``iclient``)."""

import pytest
from helpers import phantom

from engines.data.io import write_volume


@pytest.fixture()
def session(iclient):
    """Yields (session_id, truth mask)."""
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    reply = iclient.put("/session/", files={"image": ("image.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    return reply.json()["session_id"], mask
