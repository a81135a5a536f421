import gzip
import json

import nibabel
import numpy as np
import torch
from fastapi.testclient import TestClient
from helpers import REPO

from engines.config.model import load_model_config
from engines.data.io import Geometry, read_volume, write_volume
from engines.serving.pool import EnginePool
from engines.tasks.segmentation import SegmentationEngine
from server.app import create_app


def two_channel_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in 4-class network: class 3 where channel 1 is bright, class 1 where only channel 0 is."""
    a, b = x[:, :1], x[:, 1:2]
    return torch.cat([-a - b, a - b, torch.zeros_like(a) - 5, b * 2], dim=1) * 5


def test_a_4d_upload_is_the_modalities_of_a_multimodal_model(settings):
    config = load_model_config(REPO / "model_configs" / "segmentation_mri_brats_tumour.json")
    pool = EnginePool()
    pool.add(SegmentationEngine("brats_test", config, two_channel_net))
    image = np.zeros((30, 28, 20, 2), np.float32)
    image[5:25, 4:24, 3:17] = 0.1
    image[10:15, 10:15, 8:12, 1] = 3.0
    # A 4D NIfTI with the modalities along the 4th axis, as the MSD brain-tumour images are stored.
    nifti = nibabel.Nifti1Image(image, np.diag([-1.0, -1.2, 2.0, 1.0]))
    data = gzip.compress(nifti.to_bytes())
    with TestClient(create_app(settings, pool)) as client:
        reply = client.post("/v1/segmentation?model=brats_test&output=image", data={"params": json.dumps({})},
                            files={"image": ("case.nii.gz", data)})
        assert reply.status_code == 200, reply.text
        mask = read_volume(reply.content, "r.nii.gz")
        assert mask.shape == (30, 28, 20)
        np.testing.assert_allclose(mask.geometry.spacing, (1.0, 1.2, 2.0), atol=1e-6)
        assert mask.array[12, 12, 10] == 3 and mask.array[0, 0, 0] == 0
        one = client.post("/v1/segmentation?model=brats_test", files={"image": (
            "one.nii.gz", write_volume(image[..., 0], Geometry.identity(), ".nii.gz", dtype="float32"))})
        assert one.status_code == 400 and "takes 2 image channels" in one.text
