"""The interactive engine kind: config schema, registry, prepare once, step with any prompt, AIAA deepgrow."""

import json

import numpy as np
import pytest
from helpers import bright_interactive_net, dice, interactive_config, phantom, write_model, write_pool

from engines.config.model import INTERACTIVE_IN_CHANNELS, ModelConfig
from engines.data.io import Geometry, Volume
from engines.errors import ConfigError, InvalidPointsError
from engines.serving.pool import EnginePool
from engines.tasks.interactive import (
    InteractiveEngine,
    box_prompt,
    lasso_prompt,
    point_prompt,
    voxel_prompt,
)
from engines.tasks.registry import engine_class, engine_for_type
from engines.transforms.prompts import CHANNELS


def standin(**overrides) -> InteractiveEngine:
    return InteractiveEngine("interactive_test", ModelConfig.model_validate(interactive_config(**overrides)),
                             bright_interactive_net)


def test_a_lasso_is_its_filled_polygon_and_outline_once_each_in_index_order():
    from skimage.draw import polygon

    vertices = np.array([[3, 20, 7], [30, 4, 7], [38, 33, 7], [12, 39, 7], [5, 30, 7]])
    prompt = lasso_prompt(vertices.tolist(), False, (40, 42, 12))
    rr, cc = polygon(vertices[:, 0], vertices[:, 1], shape=(40, 42))
    filled = np.stack([rr, cc, np.full(len(rr), 7)], 1)
    np.testing.assert_array_equal(prompt.voxels, np.unique(np.concatenate([filled, vertices]), axis=0))
    assert prompt.positive is False and prompt.kind == "lasso"


def test_a_mask_prompt_holds_the_masks_voxels_in_index_order():
    mask = np.zeros((30, 20, 10), bool)
    mask[[4, 4, 17, 25], [2, 19, 8, 8], [9, 0, 3, 3]] = True
    np.testing.assert_array_equal(voxel_prompt("scribble", mask, True, mask.shape).voxels, np.argwhere(mask))
    assert len(voxel_prompt("mask", np.zeros_like(mask), True, mask.shape).voxels) == 0
    with pytest.raises(InvalidPointsError):
        voxel_prompt("scribble", np.zeros_like(mask), True, mask.shape)


def test_schema_accepts_interactive_models_and_refuses_what_cannot_run():
    config = ModelConfig.model_validate(interactive_config())
    assert config.type == "deepgrow" and config.interactive.max_zooms == 2 and INTERACTIVE_IN_CHANNELS == len(CHANNELS)
    assert ModelConfig.model_validate(interactive_config(interactive=None)).interactive is None
    for bad in ({"roi": None}, {"interactive": {"margin": -1}}, {"interactive": {"zoom": 2}},
                {"interactive": {"test_time_flips": [[0]]}},  # flips are the top-level tta_flips, as for every engine
                {"network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 2, "out_channels": 1,
                                                      "channels": [4, 8], "strides": [2]}}}):
        with pytest.raises(ValueError):
            ModelConfig.model_validate(interactive_config(**bad))
    from helpers import segmentation_config

    with pytest.raises(ValueError, match="deepgrow models only"):
        ModelConfig.model_validate(segmentation_config(interactive={"margin": 0.1}))


def test_registry_serves_the_deepgrow_type_under_our_and_claras_names():
    assert engine_for_type("deepgrow") is InteractiveEngine
    assert engine_class("InteractiveEngine", "engines.tasks.interactive") is InteractiveEngine
    assert engine_class("DeepgrowEngine", "medical.aas.deepgrow") is InteractiveEngine
    info = standin().info()
    assert info["type"] == "deepgrow" and info["deepgrow"] == "3D" and info["roi"] == [32, 32, 32]


def test_prepare_once_then_points_boxes_scribbles_lassos_and_masks_segment_the_object():
    engine = standin()
    volume, truth = phantom()
    prepared = engine.prepare(volume)
    assert prepared.shape == volume.shape and prepared.image.dtype == np.float32
    assert abs(float(prepared.image.mean())) < 1e-3  # normalised once, here
    shape = prepared.shape
    click = engine.step(prepared, [point_prompt([18, 25, 15], True, shape)], None)
    assert dice(click.mask, truth) > 0.85 and (click.hi - click.lo <= np.asarray(shape)).all()
    box = engine.step(prepared, [box_prompt([10, 15, 15], [26, 35, 15], True, shape)], None)  # a 2D box
    assert dice(box.mask, truth) > 0.8
    scribble = voxel_prompt("scribble", [[18, 25, 15], [19, 25, 15], [20, 25, 15]], True, shape)
    assert dice(engine.step(prepared, [scribble], None).mask, truth) > 0.85
    lasso = lasso_prompt([[8, 14, 15], [28, 14, 15], [28, 36, 15], [8, 36, 15]], True, shape)
    assert lasso.voxels[:, 2].tolist() == [15] * len(lasso.voxels) and len(lasso.voxels) == 21 * 23
    assert dice(engine.step(prepared, [lasso], None).mask, truth) > 0.8
    # a negative click removes what it touches; the current mask enters the encoding
    refined = engine.step(prepared, [point_prompt([18, 25, 15], True, shape),
                                     point_prompt([18, 25, 20], False, shape)], click.mask)
    assert refined.mask.sum() < click.mask.sum()
    extreme = voxel_prompt("extreme_points", [[10, 25, 15], [26, 25, 15]], True, shape)
    assert dice(engine.step(prepared, [extreme], None).mask, truth) > 0.8


def test_tta_flips_from_the_config_run_in_every_step_and_keep_a_symmetric_object():
    plain, flipped = standin(), standin(tta_flips=[[0], [1], [2]])
    calls = []
    backend = flipped.network.network
    flipped.network.network = lambda x: calls.append(1) or backend(x)
    volume, obj = phantom()
    steps = [engine.step(engine.prepare(volume), [point_prompt([18, 25, 15], True, volume.shape)], None)
             for engine in (plain, flipped)]
    network_calls = 1 + steps[1].zooms  # one call per crop, each averaged over the plain pass and three flips
    assert len(calls) == 4 * network_calls and dice(steps[1].mask, obj) > 0.8
    assert dice(steps[1].mask, steps[0].mask) > 0.95


def test_timer_splits_network_time_from_the_rest():
    from engines.tasks.base import Timer

    engine = standin()
    volume, _ = phantom()
    timer = Timer()
    engine.step(engine.prepare(volume), [point_prompt([18, 25, 15], True, volume.shape)], None, timer)
    assert set(timer.timings) == {"infer", "interact"} and min(timer.timings.values()) >= 0


@pytest.mark.parametrize("make", [
    lambda s: point_prompt([40, 0, 0], True, s),                       # outside
    lambda s: point_prompt([[1, 2]], True, s),                          # malformed
    lambda s: box_prompt([0, 0, 0], [40, 10, 10], True, s),            # outside
    lambda s: voxel_prompt("scribble", [], True, s),                    # empty
    lambda s: voxel_prompt("scribble", np.zeros(s, bool), True, s),     # empty mask
    lambda s: voxel_prompt("scribble", np.zeros((3, 3, 3), bool), True, s),  # wrong shape
    lambda s: lasso_prompt([[1, 1, 1], [5, 5, 5], [1, 5, 9]], True, s),  # not on one slice
    lambda s: lasso_prompt([[1, 1, 1], [5, 5, 1]], True, s),           # too few vertices
])
def test_bad_prompts_are_refused(make):
    with pytest.raises(InvalidPointsError):
        make((40, 48, 32))


def test_deepgrow_infer_is_stateless_and_reports_the_changed_crop():
    engine = standin()
    volume, truth = phantom()
    result = engine.infer(volume, {"foreground": "[[18, 25, 15]]", "background": []})
    assert dice(result.mask, truth) > 0.85 and result.mask.dtype == np.uint8
    (i0, i1), (j0, j1), (k0, k1) = result.params["crop"]
    outside = result.mask.copy()
    outside[i0:i1, j0:j1, k0:k1] = 0
    assert not outside.any() and len(result.params["points"]) == 6
    assert {"infer", "interact", "total"} <= set(result.timings)
    with pytest.raises(InvalidPointsError):
        engine.infer(volume, {"foreground": [], "background": []})


def test_thin_anisotropic_stack_works():
    engine = standin()
    shape = (64, 64, 8)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    obj = (((grid - (32, 32, 4)) * (1, 1, 8)) ** 2).sum(-1) <= 24 ** 2
    volume = Volume(obj.astype(np.float32) * 100, Geometry((1.0, 1.0, 8.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    result = engine.step(engine.prepare(volume), [point_prompt([32, 32, 4], True, shape)], None)
    assert dice(result.mask, obj) > 0.9


def test_a_tiny_real_network_loads_from_the_pool_and_runs(tmp_path):
    write_model(tmp_path, "interactive_tiny", interactive_config())
    pool_path = write_pool(tmp_path, [{"name": "interactive_tiny", "class": "InteractiveEngine",
                                       "module": "engines.tasks.interactive",
                                       "config_file": "interactive_tiny.json"}])
    pool = EnginePool.from_file(pool_path, warmup=True)
    engine = pool.get("interactive_tiny")
    assert isinstance(engine, InteractiveEngine)
    volume, _ = phantom()
    result = engine.step(engine.prepare(volume), [point_prompt([18, 25, 15], True, volume.shape)], None)
    assert result.mask.shape == volume.shape and result.mask.dtype == bool


def test_a_config_with_the_wrong_channels_is_reported_not_served(tmp_path):
    cfg = interactive_config()
    cfg["network"]["args"]["in_channels"] = 2
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    pool_path = write_pool(tmp_path, [{"name": "bad", "class": "InteractiveEngine",
                                       "module": "engines.tasks.interactive", "config_file": "bad.json"}])
    pool = EnginePool.from_file(pool_path, warmup=False)
    assert pool.record("bad").status == "unavailable" and "5 input channels" in pool.record("bad").error
    with pytest.raises(ConfigError):
        from engines.config.model import load_model_config

        load_model_config(tmp_path / "bad.json")


def test_an_interactive_model_exports_and_auto_serves_the_verified_export(tmp_path):
    from helpers import write_phantom_datalist

    from engines.backends.selection import speedup
    from engines.export.exporter import ExportOptions, export_model

    dataset = write_phantom_datalist(tmp_path / "data", n=2)
    config_path = write_model(tmp_path, "interactive_tiny", interactive_config())
    report = export_model(config_path, ExportOptions(format="torchscript", repeats=2), datalist=dataset,
                          output=tmp_path / "exports" / "ts", progress=lambda _: None)
    assert report["passed"] is True and report["members"][0]["input_shape"][1] == 5
    cfg = json.loads(config_path.read_text())
    cfg.update(model_format="auto", exports=["exports/ts"])
    config_path.write_text(json.dumps(cfg))
    pool_path = write_pool(tmp_path, [{"name": "interactive_tiny", "class": "InteractiveEngine",
                                       "module": "engines.tasks.interactive", "config_file": "interactive_tiny.json"}])
    record = EnginePool.from_file(pool_path).record("interactive_tiny")
    # auto serves the export unless its own report timed it slower than PyTorch (then it never serves)
    faster = (speedup(report) or 0) >= 1
    assert record.status == "ready" and record.summary()["backend"]["runtime"] == ("torchscript" if faster else "pytorch")
