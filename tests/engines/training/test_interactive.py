"""Interactive training: prompt simulation, corrective clicks, balanced sampling, a tiny train-evaluate run, the shipped config."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, deepgrow_config, phantom, phantom_datalist

from engines.config.model import load_model_config
from engines.evaluation.interactive import error_click, interactive_settings, load_interactive_datalist
from engines.networks import build_network
from engines.training.interactive import (
    FIRST_PROMPTS,
    InteractiveTrainConfig,
    Sampler,
    Source,
    as_thick_slices,
    learning_rate,
    load_interactive_train_config,
    make_example,
    simulate_first_prompt,
    train_interactive,
    training_click,
    training_datalists,
)
from engines.transforms.prompts import CHANNELS, crop_box, encode
from server.cli.main import main

TRUTH_SHAPE = (40, 40, 24)


def ellipsoid() -> np.ndarray:
    _, mask = phantom(shape=TRUTH_SHAPE, center=(20, 18, 12), radii=(9, 7, 5))
    return mask.astype(bool)


@pytest.mark.parametrize("kind", FIRST_PROMPTS)
def test_each_first_prompt_marks_the_object_and_encodes_into_its_channel(kind):
    truth = ellipsoid()
    rng = np.random.default_rng(3)
    prompt = simulate_first_prompt(kind, truth, rng)
    prompt.check(truth.shape)
    lo, hi = crop_box(truth.shape, (1.0, 1.0, 1.0), [prompt], None)
    x = encode(truth.astype(np.float32), None, [prompt], lo, hi, (16, 16, 16))
    channel = {"box2d": "region", "box3d": "region", "lasso": "region"}.get(kind, "positive")
    assert x[CHANNELS.index(channel)].max() > 0
    assert x[CHANNELS.index("negative")].max() == 0
    if kind == "box3d":
        (a, b) = np.asarray(prompt.box[0]), np.asarray(prompt.box[1])
        assert (np.abs(a - [11, 11, 7]) <= 1).all() and (np.abs(b - [30, 26, 18]) <= 1).all()  # jitter of 5 %
    if kind == "box2d":
        assert prompt.box[1][2] - prompt.box[0][2] == 1  # one axial slice
    if kind in ("points", "scribble"):
        assert truth[tuple(prompt.voxels.T)].all()
        if kind == "scribble":
            assert len(set(prompt.voxels[:, 2])) == 1
    if kind == "lasso":  # filled, on one slice, covering the object's section there
        k = int(prompt.voxels[0, 2])
        filled = np.zeros(truth.shape, bool)
        filled[tuple(prompt.voxels.T)] = True
        assert (filled[:, :, k] >= truth[:, :, k]).all()
    if kind == "extreme_points":
        assert prompt.voxels.shape == (6, 3)


def test_box_without_jitter_is_the_object_extent():
    truth = ellipsoid()
    prompt = simulate_first_prompt("box3d", truth, np.random.default_rng(0), jitter=0.0)
    assert prompt.box == ((11, 11, 7), (30, 26, 18))


def test_training_click_is_the_protocol_click_or_a_voxel_of_the_same_error_component():
    truth = ellipsoid()
    pred = truth.copy()
    pred[:, :, 12:] = False  # the upper half is missed
    exact = training_click(pred, truth, (1, 1, 1), np.random.default_rng(0), centre_probability=1.0)
    assert exact.voxels.tolist() == error_click(pred, truth, (1, 1, 1)).voxels.tolist()
    anywhere = training_click(pred, truth, (1, 1, 1), np.random.default_rng(0), centre_probability=0.0)
    assert anywhere.positive and truth[tuple(anywhere.voxels[0])] and not pred[tuple(anywhere.voxels[0])]
    assert training_click(truth, truth, (1, 1, 1), np.random.default_rng(0)) is None


def source(dataset: str, case: str, label: np.ndarray, structures: dict) -> Source:
    return Source(dataset, case, label.astype(np.float32), label, (1.0, 1.0, 1.0), structures)


def test_sampler_balances_datasets_by_weight_and_structures_uniformly():
    label = np.zeros((10, 10, 10), np.int16)
    label[2:5, 2:5, 2:5] = 1
    label[6:9, 6:9, 6:9] = 2
    many = [source("big", f"b{i}", label, {"one": (1,), "two": (2,)}) for i in range(20)]
    few = [source("small", "s0", label, {"one": (1,)})]
    sampler = Sampler(many + few, {"big": 1.0, "small": 1.0}, np.random.default_rng(0), component_probability=0.0)
    picks = [sampler.sample() for _ in range(400)]
    datasets = [s.dataset for s, _, _ in picks]
    assert 0.4 < datasets.count("small") / len(picks) < 0.6  # one volume, yet half the samples
    structures = [name for s, name, _ in picks if s.dataset == "big"]
    assert 0.35 < structures.count("two") / len(structures) < 0.65
    source_, name, mask = picks[0]
    assert mask.sum() == 27 and (mask == np.isin(source_.label, source_.structures[name])).all()


def test_thick_slices_average_blocks_of_axial_slices_and_keep_each_blocks_middle_label():
    label = np.zeros((12, 12, 40), np.int16)
    label[3:9, 3:9, 5:35] = 1
    image = np.broadcast_to(np.arange(40, dtype=np.float32), label.shape).copy()  # intensity = slice index
    src = Source("d", "c", image, label, (0.8, 0.8, 1.5), {"object": (1,)})
    spacings = set()
    for seed in range(40):
        thick, truth = as_thick_slices(src, src.mask("object"), np.random.default_rng(seed))
        depth, blocks = thick.image.shape[2], thick.image[0, 0]  # each block's mean slice index
        step = int(np.rint(blocks[1] - blocks[0]))
        assert 2 <= step <= 8 and np.allclose(np.diff(blocks), step) and thick.image.shape[:2] == (12, 12)
        offset = int(np.rint(blocks[0] - (step - 1) / 2))
        assert 0 <= offset < step and depth == (40 - offset) // step
        middle = np.arange(depth) * step + offset + step // 2
        assert (truth == (label[:, :, middle] == 1)).all() and (thick.mask("object") == truth).all()
        assert thick.spacing in ((1.0, 1.0, 1.0), (0.8, 0.8, 1.5 * step))
        spacings.add(thick.spacing == (1.0, 1.0, 1.0))
    assert spacings == {True, False}  # the spacing is sometimes kept, sometimes lost
    assert src.image.shape == (12, 12, 40) and src.spacing == (0.8, 0.8, 1.5)  # the source itself untouched


def test_sampler_without_thick_slices_draws_what_it_drew_before_they_existed():
    label = np.zeros((10, 10, 30), np.int16)
    label[2:8, 2:8, 3:27] = 1
    volumes = [source("d", f"c{i}", label, {"one": (1,)}) for i in range(3)]
    rng = np.random.default_rng(5)
    sampler = Sampler(volumes, {"d": 1.0}, rng, component_probability=0.0)
    picks = [sampler.sample()[0].case for _ in range(20)]
    # the draws of a sampler of the runs before thick slices: dataset, structure, case, component coin
    expected, twin = [], np.random.default_rng(5)
    for _ in range(20):
        twin.choice(1, p=[1.0]), twin.integers(1)
        expected.append(f"c{int(twin.integers(3))}")
        twin.random()
    assert picks == expected


def test_thick_slices_leave_thin_objects_as_they_are():
    label = np.zeros((12, 12, 40), np.int16)
    label[3:9, 3:9, 10:13] = 1  # three slices deep: one thick slice would lose it
    src = Source("d", "c", label.astype(np.float32), label, (1.0, 1.0, 1.0), {"object": (1,)})
    thick, truth = as_thick_slices(src, src.mask("object"), np.random.default_rng(0))
    assert thick is src and truth.shape == label.shape


def test_sampler_makes_thick_slice_stacks_at_its_probability():
    label = np.zeros((10, 10, 30), np.int16)
    label[2:8, 2:8, 3:27] = 1
    volumes = [source("d", f"c{i}", label, {"one": (1,)}) for i in range(3)]
    sampler = Sampler(volumes, {"d": 1.0}, np.random.default_rng(0), component_probability=0.0,
                      thick_slice_probability=0.5)
    depths = [src.image.shape[2] for src, _, _ in (sampler.sample() for _ in range(200))]
    assert 0.35 < np.mean([d < 30 for d in depths]) < 0.65


def test_make_example_runs_corrective_rounds_through_predict_step():
    truth = ellipsoid()
    src = source("d", "c", truth.astype(np.int16), {"object": (1,)})
    calls = []

    def network(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        return -np.ones(x.shape[1:], np.float32)  # predicts nothing: every round adds a positive click

    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y, rounds = make_example(network, src, truth, rng, (16, 16, 16), interactive_settings(None), ["box3d"], 3)
        assert x.shape == (len(CHANNELS), 16, 16, 16) and y.shape == (16, 16, 16)
        assert 0 < y.max() <= 1
        if rounds:
            assert x[CHANNELS.index("positive")].max() > 0  # the clicks from the model's own misses
    assert calls  # the simulation asked the network


def test_tiny_train_then_evaluate_through_the_cli(tmp_path):
    config = deepgrow_config(tmp_path)
    datalist = phantom_datalist(tmp_path / "data")
    train_cfg = tmp_path / "train.json"
    train_cfg.write_text(json.dumps({"interactive": True, "batch_size": 2, "max_steps": 3, "max_rounds": 1,
                                     "val_objects_per_dataset": 2, "val_clicks": 1, "num_threads": 1,
                                     "min_object_voxels": 5}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--datalist", str(datalist), "--train-config", str(train_cfg),
                 "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["history"][-1]["step"] == 3
    assert "phantom_final" in metrics["history"][-1]
    assert (out / "model.pt").is_file() and (out / "checkpoint_last.pt").is_file()
    # The last weights are saved beside the checkpoint as the served weights are (fp16), for a next stage.
    last = torch.load(out / "model_last.pt", weights_only=True)
    network = torch.load(out / "checkpoint_last.pt", weights_only=False)["network"]
    assert last.keys() == network.keys()
    for name, value in network.items():
        if value.is_floating_point():
            assert last[name].dtype == torch.float16 and torch.equal(last[name], value.half())

    # Resuming continues the step count (the weights and the optimiser come back).
    train_cfg.write_text(json.dumps({**json.loads(train_cfg.read_text()), "max_steps": 4}))
    assert main(["train", "--config", str(config), "--datalist", str(datalist), "--train-config", str(train_cfg),
                 "--output", str(out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4

    (tmp_path / "model.pt").write_bytes((out / "model.pt").read_bytes())
    report = tmp_path / "report"
    assert main(["evaluate", "--config", str(config), "--datalist", str(datalist), "--interactive",
                 "--variants", "box", "extreme_points", "--clicks", "2", "-o", str(report)]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary) >= {"box", "extreme_points", "protocol"}
    assert summary["box"]["overall"]["objects"] == 3  # a, b and both on the validation case
    assert set(summary["box"]["structures"]) == {"phantom/a", "phantom/b", "phantom/both"}
    for key in ("dice_final", "dice_auc", "nsd_final", "nsd_auc"):
        assert 0.0 <= summary["box"]["overall"][key] <= 2.0
    with open(report / "interactive.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3 * 2 * 3  # objects x variants x (first prompt + 2 clicks)
    assert (report / "dice_per_interaction.png").is_file()

    from engines.evaluation.interactive import evaluate_interactive

    only_a = evaluate_interactive(config, [datalist], tmp_path / "only_a", n_clicks=1, structures=["a"])
    assert set(only_a["box"]["structures"]) == {"phantom/a"} and only_a["protocol"]["structures"] == ["a"]


def test_datalists_of_one_dataset_name_keep_their_own_weights(tmp_path):
    # A fine-tune with replay trains on its datalist beside the ones the model was trained on, often of the
    # same dataset: each must keep its weight (not one merged dataset sampled by the last weight).
    config = deepgrow_config(tmp_path)
    datalist = phantom_datalist(tmp_path / "data")
    train_cfg = tmp_path / "train.json"
    train_cfg.write_text(json.dumps({
        "interactive": True, "batch_size": 1, "max_steps": 1, "max_rounds": 0, "val_objects_per_dataset": 1,
        "val_clicks": 0, "num_threads": 1, "min_object_voxels": 5,
        "datasets": [{"datalist": str(datalist), "weight": 1.0}, {"datalist": str(datalist), "weight": 3.0}]}))
    messages: list[str] = []
    train_interactive(config, train_cfg, None, tmp_path / "run", progress=messages.append)
    summary = next(m for m in messages if m.endswith(")") and "datasets" in m)
    assert "phantom (6 objects, p=0.25)" in summary and "phantom_2 (6 objects, p=0.75)" in summary
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert {"phantom_final", "phantom_2_final"} <= set(history[-1])


def test_schedule_steps_anneals_by_steps_whatever_the_minutes():
    cfg = InteractiveTrainConfig(learning_rate=2e-3, min_learning_rate=2e-5, schedule_steps=100, warmup_steps=10)
    for minutes in (0.0, 5.0, 500.0):  # a slow or a fast CPU: the same rate at the same step
        assert learning_rate(cfg, minutes, 0) == pytest.approx(0.2 * 2e-3)
        assert learning_rate(cfg, minutes, 10) == pytest.approx(2e-5 + 0.5 * (2e-3 - 2e-5) * (1 + math.cos(0.1 * math.pi)))
        assert learning_rate(cfg, minutes, 50) == pytest.approx(2e-5 + 0.5 * (2e-3 - 2e-5))
        assert learning_rate(cfg, minutes, 100) == pytest.approx(2e-5)
        assert learning_rate(cfg, minutes, 150) == pytest.approx(2e-5)
    by_minutes = InteractiveTrainConfig(learning_rate=2e-3, min_learning_rate=2e-5, schedule_minutes=10)
    assert learning_rate(by_minutes, 5.0, 0) == learning_rate(by_minutes, 5.0, 9999) == pytest.approx(
        2e-5 + 0.5 * (2e-3 - 2e-5))


def test_bf16_precision_trains_in_process_and_an_unknown_precision_is_refused(tmp_path, capsys):
    config = deepgrow_config(tmp_path)
    datalist = phantom_datalist(tmp_path / "data")
    train_cfg = tmp_path / "train.json"
    settings = {"interactive": True, "batch_size": 2, "max_steps": 2, "max_rounds": 1, "val_objects_per_dataset": 1,
                "val_clicks": 1, "num_threads": 1, "min_object_voxels": 5, "precision": "bf16"}
    train_cfg.write_text(json.dumps(settings))
    args = ["train", "--config", str(config), "--datalist", str(datalist), "--train-config", str(train_cfg),
            "--output", str(tmp_path / "run")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["history"][-1]["loss"])
    network = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=False)["network"]
    assert all(v.dtype == torch.float32 for v in network.values() if v.is_floating_point())  # weights stay fp32

    train_cfg.write_text(json.dumps({**settings, "precision": "fp8"}))
    capsys.readouterr()
    assert main(args) != 0
    assert "precision" in capsys.readouterr().err

    # A model_path that names the run's own last weights would be overwritten by them: refused.
    train_cfg.write_text(json.dumps(settings))
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_path": "model_last.pt"}))
    assert main(args) != 0
    assert "model_last.pt" in capsys.readouterr().err


def test_cli_refuses_an_interactive_evaluation_of_a_non_interactive_model(tmp_path, capsys):
    from helpers import annotation_config, write_model

    config = write_model(tmp_path, "annotation", annotation_config())
    datalist = phantom_datalist(tmp_path / "data")
    assert main(["evaluate", "--config", str(config), "--datalist", str(datalist), "--interactive", "-o",
                 str(tmp_path / "r")]) != 0
    assert "deepgrow" in capsys.readouterr().err


def test_shipped_config_train_config_and_datalists_load():
    config = load_model_config(REPO / "model_configs" / "interactive_any.json")
    assert config.type == "deepgrow" and config.network.args["in_channels"] == 5 and config.roi == [64, 64, 32]
    weights = (REPO / "model_configs" / config.model_path).resolve()
    if weights.is_file():  # committed with the model; fp16 on disk, loads as float32
        network = build_network(config.network)
        network.load_state_dict({k: v.float() for k, v in torch.load(weights, weights_only=True).items()})
        assert weights.stat().st_size < 8 * 1024 * 1024
    folder = REPO / "models" / "interactive_any"
    train_cfg = load_interactive_train_config(folder / "train_config.json")
    names = {load_interactive_datalist(folder / ref.datalist).dataset for ref in train_cfg.datasets}
    assert names == {"hippocampus", "acdc", "brats", "spleen_ct", "totalsegmentator"}
    without_acdc = load_interactive_train_config(folder / "train_config_without_acdc.json")
    # the leave-one-family-out run: the full recipe without the heart, annealed over the full model's 1702 steps
    assert without_acdc.exclude_datasets == ["acdc"] and without_acdc.max_steps == without_acdc.schedule_steps == 1702
    assert without_acdc.model_dump(exclude={"exclude_datasets", "schedule_steps", "max_steps", "max_minutes"}) == \
        train_cfg.model_dump(exclude={"exclude_datasets", "schedule_steps", "max_steps", "max_minutes"})
    # the GPU recipe trains the same datasets, with the same weights, from a sources pack
    gpu = load_interactive_train_config(folder / "gpu" / "train_config_gpu.json")
    assert gpu.sources_pack and gpu.workers > 0 and gpu.device == "cuda"
    assert [(Path(r.datalist).name, r.weight) for r in gpu.datasets] == \
        [(Path(r.datalist).name, r.weight) for r in train_cfg.datasets]
    assert (folder / "gpu" / gpu.init_weights).resolve() == (folder / "model.pt").resolve()
    hippocampus = load_interactive_datalist(folder / "datalists" / "hippocampus.json")
    assert len(hippocampus.training) == 200 and len(hippocampus.validation) == 30
    training = {c["image"] for c in hippocampus.training}
    assert not training & {c["image"] for c in hippocampus.validation}  # never train on validation cases
    brats = load_interactive_datalist(folder / "datalists" / "brats.json")
    assert len(brats.validation) == 1 and brats.structures == {"wt": (1, 2, 3, 4), "tc": (1, 3, 4), "et": (4,)}
    # the shipped stage leans on the RV and the myocardium: a second ACDC list, same split, only those two
    stage = load_interactive_train_config(folder / "train_config_restart10.json")
    assert stage.max_rounds == 5  # as many simulated corrective rounds as the protocol's clicks
    assert stage.precision == "bf16" and stage.init_weights == "model.pt"
    lists, weights = training_datalists(stage, folder)
    acdc, focus = (next(dl for dl in lists if dl.dataset == name) for name in ("acdc", "acdc_2"))
    assert focus.structures == {"rv": (1,), "myo": (2,)} and weights["acdc_2"] > 0
    assert (focus.training, focus.validation) == (acdc.training, acdc.validation)
    # the thirteenth-stage candidate (not shipped) is the shipped stage with appearance changes on
    candidate = load_interactive_train_config(folder / "train_config_restart11.json")
    changed = {"seed", "schedule_minutes", "max_minutes", "workers", "appearance_probability"}
    assert candidate.model_dump(exclude=changed) == stage.model_dump(exclude=changed)
    assert candidate.appearance_probability == 0.3 and stage.appearance_probability == 0
    # the fourteenth-stage candidates (not shipped): half the shipped stage's learning rate with appearance
    # changes, and the same with painted hollow shapes as one more dataset
    plain = load_interactive_train_config(folder / "train_config_restart12.json")
    shapes = load_interactive_train_config(folder / "train_config_restart12_shapes.json")
    changed = {"seed", "learning_rate", "workers", "appearance_probability"}
    assert plain.model_dump(exclude=changed) == stage.model_dump(exclude=changed)
    assert plain.learning_rate == stage.learning_rate / 2 and plain.appearance_probability == 0.3
    assert shapes.model_dump(exclude={"datasets"}) == plain.model_dump(exclude={"datasets"})
    assert shapes.datasets[:-1] == plain.datasets and shapes.datasets[-1].datalist.endswith("synthetic_shapes.json")


def test_unseen_family_experiments_change_one_thing_at_a_time():
    folder = REPO / "models" / "interactive_any"
    base = load_interactive_train_config(folder / "train_config_without_acdc_3404.json")
    thick = load_interactive_train_config(folder / "train_config_without_acdc_thick_3404.json")
    parts = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_3404.json")
    assert base.thick_slice_probability == 0 and thick.thick_slice_probability == 0.3
    assert thick.model_dump(exclude={"thick_slice_probability"}) == base.model_dump(exclude={"thick_slice_probability"})
    assert parts.model_dump(exclude={"datasets"}) == thick.model_dump(exclude={"datasets"})
    lists, _ = training_datalists(parts, folder)
    assert "acdc" not in {dl.dataset for dl in lists}
    brats, hollow = (next(dl for dl in lists if dl.dataset == name) for name in ("brats", "brats_2"))
    assert hollow.structures == {"edema": (2,), "necrosis": (1,)}  # BraTS 2013 labels, the same cases
    assert (hollow.training, hollow.validation) == (brats.training, brats.validation)
    # third session: appearance changes, supervoxel objects, both, and the appearance arm at twice the steps
    appearance = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_3404.json")
    assert parts.appearance_probability == 0 and appearance.appearance_probability == 0.5
    assert appearance.model_dump(exclude={"appearance_probability"}) == parts.model_dump(exclude={"appearance_probability"})
    objects = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_supervoxels_3404.json")
    assert objects.datasets[:-1] == parts.datasets and objects.model_dump(exclude={"datasets"}) == parts.model_dump(
        exclude={"datasets"})
    assert objects.datasets[-1].datalist.endswith("runs/supervoxels_noacdc/supervoxels.json")  # made by aiaa supervoxels
    both = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_supervoxels_3404.json")
    assert both.model_dump(exclude={"appearance_probability"}) == objects.model_dump(exclude={"appearance_probability"})
    assert both.appearance_probability == appearance.appearance_probability
    longer = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_6808.json")
    assert longer.max_steps == longer.schedule_steps == 6808
    steps = {"max_steps", "schedule_steps", "schedule_minutes"}
    assert longer.model_dump(exclude=steps) == appearance.model_dump(exclude=steps)
    # fourth session: warm restarts from that arm's weights (not committed: runs/), one change each
    restart = {"learning_rate", "seed", "init_weights"}
    doubled = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_13616.json")
    assert doubled.init_weights.endswith("runs/leaveout_appearance_6808/model_last.pt")
    assert doubled.model_dump(exclude=restart) == longer.model_dump(exclude=restart)
    stronger = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance08_13616.json")
    assert stronger.model_dump(exclude={"appearance_probability"}) == doubled.model_dump(exclude={"appearance_probability"})
    assert stronger.appearance_probability == 0.8
    again = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_17020.json")
    assert again.init_weights.endswith("runs/leaveout_appearance_13616/model_last.pt") and again.max_steps == 3404
    assert again.model_dump(exclude=restart | steps) == doubled.model_dump(exclude=restart | steps)
    shapes = load_interactive_train_config(folder / "train_config_without_acdc_thick_parts_appearance_shapes_17020.json")
    assert shapes.datasets[:-1] == again.datasets and shapes.model_dump(exclude={"datasets"}) == again.model_dump(
        exclude={"datasets"})
    assert shapes.datasets[-1].datalist.endswith("runs/shapes_noacdc/synthetic_shapes.json")  # aiaa synthetic-shapes


def test_hippocampus_left_out_chain_is_the_acdc_chain_with_the_other_family_left_out():
    folder = REPO / "models" / "interactive_any"
    twin = {"exclude_datasets", "init_weights", "workers"}
    arms = {}
    # (stage, its leave-ACDC-out twin, the run whose model_last.pt it starts from: train_without_hippocampus.sh)
    for stage, acdc_name, previous in (("6808", "appearance_6808", None),
                                       ("13616", "appearance_13616", "leaveout_hippocampus_6808"),
                                       ("shapes_17020", "appearance_shapes_17020", "leaveout_hippocampus_13616")):
        acdc = load_interactive_train_config(folder / f"train_config_without_acdc_thick_parts_{acdc_name}.json")
        arms[stage] = arm = load_interactive_train_config(folder / f"train_config_without_hippocampus_{stage}.json")
        assert arm.model_dump(exclude=twin) == acdc.model_dump(exclude=twin)
        assert (arm.exclude_datasets, arm.workers) == (["hippocampus"], 1)
        if previous is None:
            assert arm.init_weights is None
        else:
            assert arm.init_weights.endswith(f"runs/{previous}/model_last.pt")
    kept = {dl.dataset for dl in training_datalists(arms["6808"], folder)[0]}  # the last stage's shapes live in runs/
    assert "hippocampus" not in kept and "acdc" in kept


def test_wider_network_experiment_changes_only_the_width():
    folder = REPO / "models" / "interactive_any"
    shipped = load_model_config(REPO / "model_configs" / "interactive_any.json")
    wide = load_model_config(folder / "experiments" / "interactive_any_wide.json")
    assert wide.network.args == {**shipped.network.args, "channels": [32, 64, 128, 256, 320]}
    assert (wide.roi, wide.interactive, wide.tta_flips) == (shipped.roi, shipped.interactive, shipped.tta_flips)
    full = load_interactive_train_config(folder / "train_config_full_3404.json")
    arm = load_interactive_train_config(folder / "train_config_full_wide_3404.json")
    assert arm.model_dump(exclude={"workers"}) == full.model_dump(exclude={"workers"}) and arm.workers == 1


def test_roi_experiments_change_only_the_roi():
    folder = REPO / "models" / "interactive_any"
    shipped = load_model_config(REPO / "model_configs" / "interactive_any.json")
    stage = load_interactive_train_config(folder / "train_config_restart10.json")
    stretched = {"schedule_minutes", "max_minutes", "workers"}
    changed = stretched | {"seed"}
    arms = {}
    for size in (80, 96):
        config = load_model_config(folder / "experiments" / f"interactive_any_roi{size}.json")
        assert config.roi == [size, size, 32] and all(r % 16 == 0 for r in config.roi)  # four strides of 2
        assert (config.network, config.interactive, config.tta_flips) == \
            (shipped.network, shipped.interactive, shipped.tta_flips)
        # the fifteenth-stage arms: the shipped stage's recipe from its weights, one core each
        arms[size] = arm = load_interactive_train_config(folder / f"train_config_roi{size}.json")
        assert arm.model_dump(exclude=changed) == stage.model_dump(exclude=changed) and arm.workers == 0
    # the sixteenth-stage continuation (`--resume` of the 96 arm): its cosine stretched over 233 minutes, both cores
    resumed = load_interactive_train_config(folder / "train_config_roi96_continue.json")
    assert resumed.model_dump(exclude=stretched) == arms[96].model_dump(exclude=stretched)
    # 115 minutes already trained + 118 resumed = the 233-minute schedule: the resumed run anneals to its floor
    assert (resumed.schedule_minutes, resumed.max_minutes, resumed.workers) == (233, 118, 1)
    # the seventeenth stage: the same run resumed twice more, its cosine re-stretched to 469 then 380 minutes
    schedule = {"schedule_minutes", "max_minutes"}
    for name, minutes in (("continue2", (469, 38)), ("continue3", (380, 112))):
        again = load_interactive_train_config(folder / f"train_config_roi96_{name}.json")
        assert again.model_dump(exclude=schedule) == resumed.model_dump(exclude=schedule)
        assert (again.schedule_minutes, again.max_minutes) == minutes


def test_shipped_openvino_export_serves_only_for_the_weights_it_was_made_from(tmp_path):
    import shutil

    from engines.backends import TorchBackend, load_backend
    from engines.backends.selection import choose_export, read_report
    from engines.hardware import detect

    pytest.importorskip("openvino")
    config_path = REPO / "model_configs" / "interactive_any.json"
    config = load_model_config(config_path)
    assert config.model_format == "auto" and config.exports == ["../models/interactive_any/openvino_fp32"]
    export = REPO / "models" / "interactive_any" / "openvino_fp32"
    report = read_report(export)
    assert report["passed"] and report["format"] == "openvino" and report["members"][0]["input_shape"] == [1, 5, 64, 64, 32]
    parity = json.loads((export / "protocol_parity.json").read_text())
    assert parity["matches"] and parity["objects"] == 10
    # Made from the committed weights (after replacing model.pt: `make interactive-export`, then commit both).
    assert parity["export_weights_sha256"] == report["members"][0]["weights_sha256"]
    assert choose_export(config, config_path.parent, detect(), "cpu") is not None, \
        "the committed OpenVINO export is stale: run `make interactive-export` and commit it"
    served = load_backend(config, config_path.parent)
    assert not isinstance(served, TorchBackend)  # the verified export serves
    served.close()

    # A copy whose weights changed falls back to its PyTorch checkpoint.
    (tmp_path / "configs").mkdir()
    shutil.copytree(export, tmp_path / "models" / "interactive_any" / "openvino_fp32")
    weights = torch.load(REPO / "models" / "interactive_any" / "model.pt", weights_only=True)
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    torch.save(weights, tmp_path / "models" / "interactive_any" / "model.pt")
    shutil.copy(config_path, tmp_path / "configs" / "interactive_any.json")
    assert choose_export(config, tmp_path / "configs", detect(), "cpu") is None
    backend = load_backend(config, tmp_path / "configs")
    assert isinstance(backend, TorchBackend)
    backend.close()
