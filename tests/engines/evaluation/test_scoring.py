import csv
import json
import math

import numpy as np
import pytest

from engines.data.io import Geometry, Volume, write_volume_file
from engines.errors import InvalidInputError
from engines.evaluation.scoring import evaluate_masks, parse_regions, score_case, surface_scores

SPACING = (1.0, 1.0, 2.0)  # anisotropic: distances must be in mm, not voxels


def ball(centre_mm, radius_mm, shape=(64, 64, 40), spacing=SPACING) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre_mm)) <= radius_mm ** 2


def sphere_distances(r: float, d: float) -> np.ndarray:
    """Distance from each point of a sphere's surface (uniform by area) to the same sphere shifted by d."""
    u = np.linspace(-1, 1, 200_001)  # cos(angle to the shift): uniform by area on a sphere
    return np.abs(np.sqrt(r * r + d * d - 2 * r * d * u) - r)


def test_shifted_spheres_match_the_closed_forms():
    r, d = 20.0, 4.0
    a = ball((32, 32, 40), r)
    b = ball((32 + d, 32, 40), r)
    dice, hd95, asd = surface_scores(a, b, SPACING)
    # Two spheres of radius r with centres d apart overlap in pi (4r + d)(2r - d)^2 / 12.
    closed_dice = (math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12) / (4 / 3 * math.pi * r ** 3)
    assert dice == pytest.approx(closed_dice, abs=0.01)
    distances = sphere_distances(r, d)
    # Within one voxel (the largest spacing is 2 mm): surfaces are voxelised.
    assert hd95 == pytest.approx(np.percentile(distances, 95), abs=1.0)
    assert asd == pytest.approx(distances.mean(), abs=1.0)


def test_concentric_spheres_are_the_radius_difference_apart_in_millimetres():
    dice, hd95, asd = surface_scores(ball((32, 32, 40), 20.0), ball((32, 32, 40), 14.0), SPACING)
    assert dice == pytest.approx(2 * 14.0 ** 3 / (20.0 ** 3 + 14.0 ** 3), abs=0.01)
    assert hd95 == pytest.approx(6.0, abs=1.0) and asd == pytest.approx(6.0, abs=1.0)


def test_shifted_cubes_have_the_exact_dice():
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros_like(a)
    a[5:25, 5:25, 5:25] = True
    b[8:28, 5:25, 5:25] = True
    assert surface_scores(a, b, (1, 1, 1))[0] == pytest.approx(17 / 20)


def test_empty_masks_are_reported_not_crashed_on():
    full = np.zeros((10, 10, 10), bool)
    full[3:6, 3:6, 3:6] = True
    empty = np.zeros_like(full)
    assert all(math.isnan(v) for v in surface_scores(empty, empty, (1, 1, 1)))
    assert surface_scores(empty, full, (1, 1, 1)) == (0.0, math.inf, math.inf)
    assert surface_scores(full, empty, (1, 1, 1)) == (0.0, math.inf, math.inf)


def test_regions_are_unions_of_label_values():
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[2:18, 2:18, 2:18] = 1
    truth[6:14, 6:14, 6:14] = 2
    truth[8:12, 8:12, 8:12] = 3
    prediction = truth.copy()
    prediction[prediction == 3] = 2  # enhancing tumour missed, still core
    rows = {r.label: r for r in score_case("c", prediction, truth, (1, 1, 1), parse_regions(["WT=1,2,3", "TC=2,3", "ET=3"]))}
    assert rows["WT"].dice == 1.0 and rows["TC"].dice == 1.0
    assert rows["ET"].dice == 0.0 and rows["ET"].hd95 == math.inf
    with pytest.raises(InvalidInputError, match="NAME=v1,v2"):
        parse_regions(["WT:1,2"])


def _write(path, array):
    write_volume_file(Volume(np.asarray(array, np.uint8), Geometry(SPACING, (0, 0, 0), tuple(np.eye(3).ravel()))), path)


def test_evaluate_masks_writes_the_report(tmp_path):
    truth = np.zeros((32, 32, 20), np.uint8)
    truth[4:20, 4:20, 4:12] = 1
    truth[20:28, 8:16, 4:12] = 2
    shifted = np.roll(truth, 2, axis=0)
    no_two = truth.copy()
    no_two[no_two == 2] = 0
    for name, prediction in [("a", truth), ("b", shifted), ("c", no_two)]:
        _write(tmp_path / "labels" / f"{name}.nii.gz", truth)
        _write(tmp_path / "pred" / f"{name}.nii", prediction)  # matched by name, whatever the suffix
    _write(tmp_path / "labels" / "unused.nii.gz", truth)  # a label without prediction is left out
    summary = evaluate_masks(tmp_path / "pred", tmp_path / "labels", tmp_path / "report")
    assert set(summary) == {"1", "2"}
    assert summary["1"]["n"] == 3 and summary["2"]["n"] == 3 and summary["2"]["n_infinite_distance"] == 1
    rows = list(csv.DictReader(open(tmp_path / "report" / "raw.csv")))
    assert [list(r) for r in rows[:1]] == [["case", "label", "dice", "hd95", "asd"]]
    assert len(rows) == 6 and {r["case"] for r in rows} == {"a", "b", "c"}
    c2 = next(r for r in rows if r["case"] == "c" and r["label"] == "2")
    assert (c2["dice"], c2["hd95"], c2["asd"]) == ("0", "inf", "inf")
    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == summary
    dice_two = [1.0, float(next(r for r in rows if r["case"] == "b" and r["label"] == "2")["dice"]), 0.0]
    assert summary["2"]["dice"] == pytest.approx(np.mean(dice_two), abs=1e-4)
    assert summary["2"]["dice_std"] == pytest.approx(np.std(dice_two), abs=1e-4)
    assert "anterior" not in (tmp_path / "report" / "summary.txt").read_text()
    assert (tmp_path / "report" / "dice_boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_masks_refuses_unmatched_predictions_and_other_grids(tmp_path):
    _write(tmp_path / "pred" / "x.nii.gz", np.ones((8, 8, 8)))
    _write(tmp_path / "labels" / "y.nii.gz", np.ones((8, 8, 8)))
    with pytest.raises(InvalidInputError, match="no label of the same name"):
        evaluate_masks(tmp_path / "pred", tmp_path / "labels", tmp_path / "r")
    _write(tmp_path / "labels" / "x.nii.gz", np.ones((8, 8, 9)))
    with pytest.raises(InvalidInputError, match="is not the grid of its label"):
        evaluate_masks(tmp_path / "pred", tmp_path / "labels", tmp_path / "r")
