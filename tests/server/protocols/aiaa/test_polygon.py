"""AIAA mask2polygon and fixpolygon in the shapes NVIDIA's clients send and parse."""

import json

import numpy as np
import pytest
from helpers import GEOMETRY, dice
from multipart import parse_like_cpp_client, parse_like_python_client

from engines.data.io import Geometry, read_volume, write_volume
from engines.errors import InvalidInputError
from server.protocols.aiaa.polygons import fill_polygons, mask_to_polygons, tolerance_for


def box_mask(shape=(40, 48, 12)) -> np.ndarray:
    mask = np.zeros(shape, np.uint16)
    mask[10:30, 5:25, 3:8] = 1  # i 10..29, j 5..24, slices 3..7
    mask[15:20, 10:15, 5] = 0   # a hole on slice 5
    return mask


def test_mask2polygon_is_plain_json_per_slice_of_j_i_points(client):
    mask = box_mask()
    data = write_volume(mask, GEOMETRY, ".nii.gz", dtype="uint16")
    reply = client.post("/v1/mask2polygon", data={"params": json.dumps({"more_points": 10})},
                        files={"datapoint": ("test-data/mask2polygon.input.nii.gz", data)})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    slices = reply.json()
    assert len(slices) == 12 and slices[0] == [] and slices[8] == [] and len(slices[4]) == 1 and len(slices[5]) == 2
    points = np.asarray(slices[4][0])
    assert points[:, 0].min() == 5 and points[:, 0].max() == 24  # first coordinate is j
    assert points[:, 1].min() == 10 and points[:, 1].max() == 29  # second is i
    refilled = np.stack([fill_polygons(polys, mask.shape[:2], swap=True) for polys in slices], axis=2)
    assert (refilled == (mask > 0)).all()  # even-odd: the hole stays a hole


def test_more_points_gives_more_vertices():
    grid = np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"))
    disc = (((grid - 32) ** 2).sum(0) <= 20 ** 2)[:, :, None]
    few = mask_to_polygons(disc, tolerance_for(1))[0][0]
    many = mask_to_polygons(disc, tolerance_for(40))[0][0]
    assert 3 <= len(few) < len(many)
    with pytest.raises(InvalidInputError):
        tolerance_for(0)


def test_fixpolygon_2d_png_drags_the_vertex_and_its_neighbours(client):
    slice_ = np.zeros((60, 50), np.uint8)  # [x, y] = [column, row]
    data = write_volume(slice_, Geometry.identity(2), ".png")
    poly = [[[10, 10], [30, 10], [30, 30], [20, 35], [10, 30]]]
    params = {"poly": poly, "dimension": 2, "polygon_index": 0, "vertex_index": 1, "vertex_offset": [8, -4],
              "propagate_neighbor": 1}
    reply = client.post("/v1/fixpolygon", data={"params": json.dumps(params)},
                        files={"datapoint": ("test-data/fixpolygon.input.png", data)})
    assert reply.status_code == 200, reply.text
    form, files = parse_like_python_client(reply.content, reply.headers["content-type"])
    moved = json.loads(form["params"])["poly"]
    assert moved[0][1] == [38, 6] and moved[0][0] == [14, 8] and moved[0][2] == [34, 28] and moved[0][3] == [20, 35]
    (name, png), = files.items()
    image = read_volume(png, name)
    assert name.endswith(".png") and image.shape == (60, 50)
    assert image.array[37, 7] > 0 and image.array[5, 5] == 0
    assert parse_like_cpp_client(reply.content)[0]["poly"] == moved


def test_fixpolygon_3d_propagates_across_slices(client):
    mask = box_mask()
    slices = mask_to_polygons(mask, 1.0)
    k, polygon = 4, slices[4][0]
    vertex = int(np.argmax(np.asarray(polygon)[:, 0]))  # the largest j
    params = {"poly": slices, "dimension": 3, "polygon_index": 0, "vertex_index": vertex, "slice_index": k,
              "vertex_offset": [6, 0], "propagate_neighbor": 1, "propagate_neighbor_3d": 1}
    data = write_volume(mask, GEOMETRY, ".nii.gz")
    reply = client.post("/v1/fixpolygon", data={"params": json.dumps(params)},
                        files={"image": ("fixpolygon.input.nii.gz", data)})
    assert reply.status_code == 200, reply.text
    params_out, data_out = parse_like_cpp_client(reply.content)
    moved = params_out["poly"]
    assert moved[4][0][vertex][0] == polygon[vertex][0] + 6
    assert max(p[0] for p in moved[3][0]) == max(p[0] for p in slices[3][0]) + 3  # half as far next door
    assert moved[6] == slices[6]
    result = read_volume(data_out, "r.nii.gz")
    assert result.shape == mask.shape and result.array[:, :, 4].sum() > (mask[:, :, 4] > 0).sum()
    assert dice(result.array[:, :, 7], mask[:, :, 7]) == 1.0


@pytest.mark.parametrize("params", [
    {"poly": [], "dimension": 2, "polygon_index": 0, "vertex_index": 0, "vertex_offset": [1, 1]},
    {"poly": [[[1, 1], [5, 1], [5, 5]]], "dimension": 2, "polygon_index": 3, "vertex_index": 0,
     "vertex_offset": [1, 1]},
    {"poly": [[[1, 1], [5, 1], [5, 5]]], "dimension": 2, "polygon_index": 0, "vertex_index": 9,
     "vertex_offset": [1, 1]},
    {"poly": [[[1, 1], [5, 1], [5, 5]]], "dimension": 2, "polygon_index": 0, "vertex_index": 0},
    {"poly": [[[1, 1], [5, 1], [5, 5]]], "dimension": 3, "polygon_index": 0, "vertex_index": 0,
     "vertex_offset": [1, 1]},  # 3D edit of a 2D image
])
def test_bad_fixpolygon_params_are_400(client, params):
    data = write_volume(np.zeros((20, 20), np.uint8), Geometry.identity(2), ".png")
    reply = client.post("/v1/fixpolygon", data={"params": json.dumps(params)}, files={"image": ("s.png", data)})
    assert reply.status_code == 400, reply.text


def test_mask2polygon_needs_a_3d_mask(client):
    data = write_volume(np.zeros((20, 20), np.uint8), Geometry.identity(2), ".png")
    assert client.post("/v1/mask2polygon", files={"image": ("s.png", data)}).status_code == 400
    assert client.post("/v1/mask2polygon", data={"params": "{}"}).status_code == 400
