"""The data subcommands end to end, as a user runs them (exit codes, messages, files)."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import REPO, SHARED_DATA, phantom, segmentation_config, write_model

from engines.data.io import Volume, read_volume, write_volume_file
from server.cli.main import main

BRATS_CASE = SHARED_DATA / "brats2013_6cases" / "brats_2013_pat0001_1"
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"


def test_merge_labels_from_a_brats_label_map(tmp_path, capsys):
    if not BRATS_CASE.is_dir():
        pytest.skip("../shared/data/brats2013_6cases is absent (real data lives beside the repo)")
    ot = BRATS_CASE / "OTMultiClass.nii.gz"
    out = tmp_path / "tumour.nii.gz"
    assert main(["merge-labels", f"{ot}:1,2,3,4", f"{ot}:1,3,4", f"{ot}:4", "-o", str(out)]) == 0
    merged, original = read_volume(out).array, np.rint(read_volume(ot).array)
    assert np.array_equal(merged == 1, original == 2)  # edema: WT only
    assert np.array_equal(merged == 2, np.isin(original, [1, 3]))  # core without enhancing
    assert np.array_equal(merged == 3, original == 4)
    brain = BRATS_CASE / "brainmask.nii.gz"
    assert main(["merge-labels", str(brain), str(out), "--values", "9", "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "one value per mask" in capsys.readouterr().err


def test_merge_labels_refuses_other_grids(tmp_path, capsys):
    volume, mask = phantom()
    a = write_volume_file(Volume(mask, volume.geometry), tmp_path / "a.nii.gz")
    b = write_volume_file(Volume(mask[:-1], volume.geometry), tmp_path / "b.nii.gz")
    assert main(["merge-labels", str(a), str(b), "-o", str(tmp_path / "m.nii.gz")]) == 2
    assert "is not on the grid of" in capsys.readouterr().err and not (tmp_path / "m.nii.gz").exists()


def test_convert_real_dicom_then_snapshot_it(tmp_path, capsys):
    series = SHARED_DATA / "totalsegmentator_example" / "example_ct_dicom"
    if not series.is_dir():
        pytest.skip("../shared/data/totalsegmentator_example is absent (real data lives beside the repo)")
    assert main(["convert", "-d", str(series), "-s", ".dcm", "-e", ".nii.gz", "-o", str(tmp_path), "-r", "2"]) == 0
    out = tmp_path / "example_ct_dicom.nii.gz"
    image = sitk.ReadImage(str(out))
    assert image.GetSpacing() == (2.0, 2.0, 2.0) and image.GetSize() == (250, 250, 20)
    assert main(["convert", "-d", str(series), "-o", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
    png = tmp_path / "ct.png"
    assert main(["snapshot", str(out), "-o", str(png), "--point", "125,125,10"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["convert", "-d", str(tmp_path / "nothing"), "-o", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_infer_then_evaluate_masks_matches_evaluate_model(tmp_path, capsys):
    config = write_model(tmp_path / "model", "seg", segmentation_config())
    items = []
    for i in range(2):
        volume, mask = phantom(center=(18 + i, 25, 15))
        label = mask.copy()
        label[20:] *= 2
        write_volume_file(Volume(volume.array, volume.geometry), tmp_path / "images" / f"c{i}.nii.gz")
        write_volume_file(Volume(label, volume.geometry), tmp_path / "labels" / f"c{i}.nii.gz")
        items.append({"image": f"images/c{i}.nii.gz", "label": f"labels/c{i}.nii.gz"})
    (tmp_path / "d.json").write_text(json.dumps({"training": [], "validation": items}))
    assert main(["infer", "--config", str(config), "--datalist", str(tmp_path / "d.json"), "-o", str(tmp_path / "p")]) == 0
    assert "infer: 2/2 c1" in capsys.readouterr().err  # plain progress lines when not on a terminal
    assert main(["evaluate", "--predictions", str(tmp_path / "p"), "--labels", str(tmp_path / "labels"),
                 "--regions", "anterior=1", "posterior=2", "-o", str(tmp_path / "r1")]) == 0
    assert main(["evaluate", "--config", str(config), "--datalist", str(tmp_path / "d.json"),
                 "-o", str(tmp_path / "r2")]) == 0
    assert "anterior" in capsys.readouterr().out
    one, two = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("r1", "r2"))
    assert one == two
    assert main(["evaluate", "--config", str(config), "-o", str(tmp_path / "r3")]) == 2
    assert "give either" in capsys.readouterr().err


def test_evaluate_a_shipped_model_on_real_cases(tmp_path):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip("../shared/data/msd_hippocampus is absent (real data lives beside the repo)")
    data = json.loads((HIPPOCAMPUS / "datalist.json").read_text())
    small = {"training": [], "validation": [{k: str(HIPPOCAMPUS / v) for k, v in c.items()} for c in data["validation"][:2]]}
    (tmp_path / "d.json").write_text(json.dumps(small))
    config = REPO / "model_configs" / "annotation_mri_hippocampus_fast.json"
    assert main(["evaluate", "--config", str(config), "--datalist", str(tmp_path / "d.json"), "-o", str(tmp_path / "r")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "r" / "raw.csv")))
    assert len(rows) == 2 and all(float(r["dice"]) > 0.8 and 0 < float(r["hd95"]) < 5 for r in rows)


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    import io

    from server.cli.data import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        report = Progress("infer", stream)
        for n in range(1, 4):
            report(n, 3, f"case{n}")
    assert "3/3" in terminal.getvalue() and "|" in terminal.getvalue() and "case3" in terminal.getvalue()
    assert pipe.getvalue().splitlines() == ["infer: 1/3 case1", "infer: 2/3 case2", "infer: 3/3 case3"]
