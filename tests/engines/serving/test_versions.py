import json

import pytest
import torch
from helpers import annotation_config, phantom, phantom_points, write_model, write_pool

from engines.config.model import ModelConfig
from engines.errors import (ConfigError, InvalidNameError, ModelLoadError, ModelNotFoundError, ModelUnavailableError)
from engines.serving.deploy import ServingManager
from engines.serving.pool import EnginePool
from engines.serving.versions import ModelStore, VersionFiles, check_model_name


def _files(folder, seed=0) -> VersionFiles:
    path = write_model(folder, "m", annotation_config(), seed=seed)
    return VersionFiles(ModelConfig.model_validate(json.loads(path.read_text())), [folder / "model.pt"], [None], [None])


def test_versions_are_numbered_complete_folders_with_rewritten_paths(tmp_path):
    store = ModelStore(tmp_path / "store")
    assert store.register("m", _files(tmp_path / "a"), source={"kind": "test"}) == "1"
    assert store.register("m", _files(tmp_path / "b", seed=1), source={"kind": "test"}, metrics={"dice": 0.5}) == "2"
    assert store.numbers("m") == [1, 2]
    config = json.loads(store.config_path("m", 2).read_text())
    assert config["model_path"] == "model.pt" and config["version"] == "2"
    assert store.info("m", 2)["metrics"] == {"dice": 0.5}
    assert [p.name for p in (tmp_path / "store" / "m").iterdir() if p.name.startswith(".")] == []
    store.set_serving("m", "1")
    assert [v["serving"] for v in store.versions("m")] == [True, False]
    with pytest.raises(ModelNotFoundError):
        store.set_serving("m", "7")


def test_a_version_whose_files_are_wrong_is_never_published(tmp_path):
    store = ModelStore(tmp_path / "store")
    files = _files(tmp_path / "a")
    files.weights = []
    with pytest.raises(ConfigError):
        store.register("m", files, source={})
    assert store.numbers("m") == [] and not any(p.name.startswith(".") for p in (tmp_path / "store" / "m").iterdir())


def test_model_names_cannot_escape_the_store():
    for bad in ("../x", "a/b", "..", ".hidden", ""):
        with pytest.raises(InvalidNameError):
            check_model_name(bad)
    assert check_model_name("annotation_mri_hippocampus.v2") == "annotation_mri_hippocampus.v2"


def test_a_swap_keeps_in_flight_engines_usable_and_a_broken_version_leaves_the_old_one_serving(tmp_path):
    write_model(tmp_path / "model", "tiny", annotation_config())
    pool = EnginePool.from_file(write_pool(tmp_path, [{"name": "tiny", "class": "Dextr3dCroppedEngine",
                                                       "module": "medical.aas.dextr3dcropped",
                                                       "config_file": "model/tiny.json"}]), warmup=False)
    serving = ServingManager(pool, ModelStore(tmp_path / "store"), warmup=True)
    serving.sync_at_start()
    old = pool.get("tiny")
    assert old.version == "2" and serving.store.serving("tiny") == "2"

    new = serving.store.register("tiny", _files(tmp_path / "b", seed=1), source={})
    serving.deploy("tiny", new)
    assert pool.get("tiny").version == "3" and pool.get("tiny") is not old
    volume, mask = phantom()
    assert old.infer(volume, {"points": phantom_points(mask)}).mask.shape == volume.shape  # in flight: still works

    broken = _files(tmp_path / "c", seed=2)
    torch.save({"nonsense": torch.zeros(1)}, broken.weights[0])
    bad = serving.store.register("tiny", broken, source={})
    with pytest.raises(ModelLoadError, match="do not fit"):
        serving.deploy("tiny", bad)
    assert pool.get("tiny").version == "3" and serving.store.serving("tiny") == "3"

    # a restart serves the recorded version, not the configured one
    restarted = EnginePool.from_file(tmp_path / "engine_pool.json", warmup=False)
    ServingManager(restarted, ModelStore(tmp_path / "store"), warmup=False).sync_at_start()
    assert restarted.get("tiny").version == "3"


def test_a_configured_version_keeps_serving_its_verified_export(tmp_path):
    from helpers import require_runtime, segmentation_config, write_phantom_datalist

    from engines.backends import describe, load_backend
    from engines.export.exporter import ExportOptions, export_model

    require_runtime("openvino")

    datalist = write_phantom_datalist(tmp_path / "data", n=2)
    source = tmp_path / "configs"
    path = write_model(source, "seg", segmentation_config())
    export_model(path, ExportOptions(format="openvino", repeats=1), datalist=datalist, output=source / "exports/ov",
                 progress=lambda _: None)
    config = ModelConfig.model_validate({**json.loads(path.read_text()), "model_format": "auto",
                                         "exports": ["exports/ov"], "datalist": "../data/datalist.json"})
    store = ModelStore(tmp_path / "store")
    number = store.register("seg", VersionFiles(config, [source / "model.pt"], [None], [None], source), source={})
    version_config = store.config_path("seg", number)
    stored = json.loads(version_config.read_text())
    assert stored["datalist"] == str((tmp_path / "data" / "datalist.json").resolve())
    from engines.config.model import load_model_config

    backend = load_backend(load_model_config(version_config), version_config.parent)
    report = json.loads((source / "exports" / "ov" / "export_report.json").read_text())
    if not torch.cuda.is_available() and report["speedup_vs_pytorch"] >= 1:
        assert describe(backend)["runtime"] == "openvino"  # same weights (fingerprint), so the export still serves
    else:  # a CPU export on a GPU host, or one slower than PyTorch: the checkpoint serves
        assert describe(backend)["runtime"] == "pytorch"
    write_model(tmp_path / "b", "seg", segmentation_config(), seed=3)
    retrained = VersionFiles(load_model_config(version_config), [tmp_path / "b" / "model.pt"], [None], [None],
                             version_config.parent)
    # a version with other weights never serves the parent's export (the job also drops the list)
    other = store.config_path("seg", store.register("seg", retrained, source={}))
    assert describe(load_backend(load_model_config(other), other.parent))["runtime"] == "pytorch"


def test_a_version_that_fails_to_load_at_start_is_not_reported_serving_nor_used_as_a_base(tmp_path):
    write_model(tmp_path / "model", "tiny", annotation_config())
    pool_file = write_pool(tmp_path, [{"name": "tiny", "class": "Dextr3dCroppedEngine",
                                       "module": "medical.aas.dextr3dcropped", "config_file": "model/tiny.json"}])
    first = ServingManager(EnginePool.from_file(pool_file, warmup=False), ModelStore(tmp_path / "store"), warmup=False)
    first.sync_at_start()
    good = first.store.register("tiny", _files(tmp_path / "b", seed=1), source={})
    first.deploy("tiny", good)
    (first.store.version_dir("tiny", good) / "model.pt").write_bytes(b"not weights any more")  # e.g. a bad disk

    pool = EnginePool.from_file(pool_file, warmup=False)
    restarted = ServingManager(pool, ModelStore(tmp_path / "store"), warmup=False)
    restarted.sync_at_start()  # the recorded version fails to load; the configured one keeps serving
    configured = pool.get("tiny").version
    assert restarted.serving_version("tiny") == configured != good
    version, config_path = restarted.serving_config("tiny")  # what the next job starts from
    assert version == configured and config_path == restarted.store.config_path("tiny", configured)
    listed = {v["version"]: v for v in restarted.versions("tiny")}
    assert listed[configured]["serving"] and not listed[good]["serving"]
    assert "load_error" in listed[good] and restarted.load_error("tiny")[0] == good

    restarted.pool.remove("tiny")  # nothing of it serves at all: a job needs an explicit base version
    with pytest.raises(ModelUnavailableError, match="failed to load"):
        restarted.serving_config("tiny")


def test_adding_or_deleting_a_model_waits_for_a_deploy_in_progress(tmp_path, monkeypatch):
    import threading

    write_model(tmp_path / "model", "tiny", annotation_config())
    pool = EnginePool.from_file(write_pool(tmp_path, [{"name": "tiny", "class": "Dextr3dCroppedEngine",
                                                       "module": "medical.aas.dextr3dcropped",
                                                       "config_file": "model/tiny.json"}]), warmup=False)
    serving = ServingManager(pool, ModelStore(tmp_path / "store"), warmup=False)
    serving.sync_at_start()
    new = serving.store.register("tiny", _files(tmp_path / "b", seed=1), source={})
    entered, release = threading.Event(), threading.Event()
    swap = pool.swap

    def slow_swap(*args, **kwargs):  # a deploy that is loading and warming its version
        entered.set()
        assert release.wait(30)
        return swap(*args, **kwargs)

    monkeypatch.setattr(pool, "swap", slow_swap)
    deploy = threading.Thread(target=serving.deploy, args=("tiny", new))
    deploy.start()
    assert entered.wait(30)
    delete = threading.Thread(target=serving.delete_model, args=("tiny",))
    delete.start()
    delete.join(timeout=0.5)
    assert delete.is_alive() and serving.store.numbers("tiny")  # waits: the deploy holds the lock
    release.set()
    deploy.join()
    delete.join()
    assert pool.record("tiny") is None and serving.store.numbers("tiny") == []  # then deleted, not resurrected
