import io
import json

import matplotlib.image
from helpers import phantom, phantom_points

from engines.data.io import write_volume
from engines.data.snapshot import LABEL_COLOURS, LEGEND_PIXELS, PANEL_PIXELS


def test_output_png_gives_a_picture_of_the_result(client):
    volume, mask = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")
    for api, params in [("dextr3d?model=annotation_test", {"points": phantom_points(mask)}),
                        ("segmentation?model=segmentation_test", {}), ("inference?model=segmentation_test", {})]:
        reply = client.post(f"/v1/{api}&output=png", data={"params": json.dumps(params)},
                            files={"image": ("v.nii.gz", data)})
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "image/png"
        pixels = matplotlib.image.imread(io.BytesIO(reply.content), format="png")
        assert pixels.shape[:2] == (PANEL_PIXELS + LEGEND_PIXELS, 3 * PANEL_PIXELS)
        red = (abs(pixels[..., 0] - LABEL_COLOURS[0][0]) < 0.02) & (pixels[..., 1] < 0.02) & (pixels[..., 2] < 0.02)
        assert red[PANEL_PIXELS:].sum() > 20  # the legend names the first label in its colour


def test_unknown_output_is_still_refused(client):
    volume, _ = phantom()
    reply = client.post("/v1/segmentation?model=segmentation_test&output=gif",
                        files={"image": ("v.nii.gz", write_volume(volume.array, volume.geometry, ".nii.gz"))})
    assert reply.status_code == 400 and "png" in reply.text
