import json

import numpy as np
import pytest
from helpers import annotation_config, phantom, phantom_points, segmentation_config, write_model, write_pool

from engines.errors import ModelNotFoundError, ModelUnavailableError
from engines.serving.pool import EnginePool


def entry(name, config_file, cls="Dextr3dCroppedEngine", module="medical.aas.dextr3dcropped", **kw):
    return {"name": name, "class": cls, "module": module, "config_file": config_file, **kw}


def test_pool_loads_warms_and_serves(tmp_path):
    write_model(tmp_path / "models", "ann", annotation_config())
    write_model(tmp_path / "models", "seg", segmentation_config(model_path="seg.pt"), seed=1)
    pool = EnginePool.from_file(write_pool(tmp_path, [
        entry("ann", "models/ann.json", labels=["thing"], version=3),
        entry("seg", "models/seg.json", cls="SegmentationEngine", module="medical.aas.segmentation"),
    ]))
    assert [r.status for r in pool.records()] == ["ready", "ready"]
    ann = pool.get("ann")
    assert ann.info()["labels"] == ["thing"] and ann.info()["version"] == "3"
    volume, mask = phantom()
    result = ann.infer(volume, {"points": phantom_points(mask)})
    assert result.mask.shape == volume.shape
    assert pool.get("seg").infer(volume, {}).mask.shape == volume.shape


def test_one_broken_model_is_unavailable_while_the_others_serve(tmp_path):
    write_model(tmp_path, "ann", annotation_config())
    (tmp_path / "broken.json").write_text(json.dumps(annotation_config(model_path="missing.pt")))
    # a segmentation config pointing at the annotation model's weights
    (tmp_path / "mismatch.json").write_text(json.dumps(segmentation_config(model_path="model.pt")))
    pool = EnginePool.from_file(write_pool(tmp_path, [
        entry("ann", "ann.json"),
        entry("no_weights", "broken.json"),
        entry("bad_class", "ann.json", cls="Nope", module="x"),
        entry("wrong_weights", "mismatch.json", cls="SegmentationEngine", module="medical.aas.segmentation"),
        entry("no_config", "absent.json"),
        entry("type_clash", "ann.json", cls="SegmentationEngine", module="medical.aas.segmentation"),
        {"name": "bad entry", "class": "X"},
    ]))
    status = {r.name: r for r in pool.records()}
    assert status["ann"].status == "ready"
    assert "missing.pt" in status["no_weights"].error
    assert "unknown engine" in status["bad_class"].error
    assert "do not fit" in status["wrong_weights"].error
    assert "absent.json" in status["no_config"].error
    assert "does not match" in status["type_clash"].error
    assert any(r.name.startswith("<entry 6>") and r.status == "unavailable" for r in pool.records())
    assert [e.name for e in pool.engines()] == ["ann"]
    with pytest.raises(ModelUnavailableError, match="missing.pt"):
        pool.get("no_weights")
    with pytest.raises(ModelNotFoundError):
        pool.get("nothing")
    volume, mask = phantom()
    assert pool.get("ann").infer(volume, {"points": phantom_points(mask)}).mask.dtype == np.uint8


def test_the_shipped_pool_serves_what_auto_chooses_for_this_machine():
    # Whatever this machine is (a GPU host, no OpenVINO installed, a CPU without bf16): each shipped
    # model serves the export 'auto' chooses here, or its PyTorch checkpoint when none fits.
    from helpers import REPO

    from engines.backends.base import select_device
    from engines.backends.selection import choose_export
    from engines.hardware import detect

    pool = EnginePool.from_file(REPO / "engine_pool.json", warmup=False)
    backends = {r.name: (r, r.summary().get("backend", {})) for r in pool.records()}
    assert set(backends) == {"annotation_mri_hippocampus", "segmentation_mri_hippocampus", "interactive_any"}
    for name, (record, backend) in backends.items():
        config = record.engine.config
        chosen = choose_export(config, record.config_path.parent, detect(), select_device(config.device).type)
        expected = (chosen.format, chosen.precision) if chosen else ("pytorch", "fp32")
        runtime = {"onnx": "onnxruntime"}.get(expected[0], expected[0])
        assert (backend["runtime"], backend["precision"]) == (runtime, expected[1]), (name, backend)
    pool.close()


def test_a_multi_channel_model_passes_its_warm_up(tmp_path):
    # Was: the warm-up volume had one channel, so a two-modality model (the BraTS one) was never served.
    from helpers import REPO, segmentation_config, write_model, write_pool

    from engines.serving.pool import EnginePool

    brats = json.loads((REPO / "model_configs" / "segmentation_mri_brats_tumour.json").read_text())
    cfg = segmentation_config(pre_transforms=brats["pre_transforms"], post_transforms=[])
    cfg["pre_transforms"][3]["args"]["roi"] = [32, 32, 32]  # the shipped pipeline, at a test's size
    cfg["network"]["args"]["in_channels"] = 2
    write_model(tmp_path / "m", "two", cfg)
    pool_file = write_pool(tmp_path, [{"name": "two", "class": "SegmentationEngine",
                                       "module": "medical.aas.segmentation", "config_file": "m/two.json"}])
    pool = EnginePool.from_file(pool_file, warmup=True)
    record = pool.record("two")
    assert record.status == "ready", record.error
    volume, params = record.engine.example_input()
    assert volume.array.shape == (32, 32, 32, 2) and params == {}


def test_reads_of_the_pool_never_see_it_change_under_them():
    # Was: GET /v1/models during a deploy could fail with "dictionary changed size during iteration".
    # Here the deploy lands (deterministically) while the read walks the records.
    from conftest import standin_pool

    from engines.serving.pool import ModelRecord

    pool = standin_pool()
    engine = pool.get("annotation_test")

    class DeployLandsNow(ModelRecord):
        landed = False

        @property
        def engine(self):
            if not DeployLandsNow.landed:
                DeployLandsNow.landed = True
                pool.add(type(engine)("deployed_meanwhile", engine.config, engine.backend))
            return engine

        @engine.setter
        def engine(self, value):
            pass

    pool._set(DeployLandsNow("walked", "ready"))
    assert {e.name for e in pool.engines()} >= {"annotation_test", "segmentation_test"}
    assert pool.record("deployed_meanwhile") is not None
