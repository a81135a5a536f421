import json
from pathlib import Path

import pytest
from helpers import REPO, annotation_config

from engines.config.model import ModelConfig, load_model_config, parse_pool
from engines.errors import ConfigError


def test_every_shipped_config_validates():
    entries = parse_pool(REPO / "engine_pool.json")
    assert entries and all(not isinstance(e, ConfigError) for e in entries)
    for entry in entries:
        config = load_model_config(REPO / entry.config_file, entry.name)
        for member in config.members():
            assert (REPO / entry.config_file).parent.joinpath(member.model_path).resolve().is_file()
    for path in (REPO / "model_configs").glob("*.json"):
        load_model_config(path)


def test_unknown_key_names_file_entry_and_key(tmp_path: Path):
    pool = tmp_path / "engine_pool.json"
    pool.write_text(json.dumps([
        {"name": "good", "class": "SegmentationEngine", "module": "medical.aas.segmentation", "config_file": "a.json"},
        {"name": "bad", "class": "SegmentationEngine", "module": "m", "config_file": "a.json", "colour": "red"},
        {"name": "good", "class": "SegmentationEngine", "module": "m", "config_file": "a.json"},
    ]))
    good, bad, dup = parse_pool(pool)
    assert good.name == "good"
    assert isinstance(bad, ConfigError)
    assert str(pool) in str(bad) and "entry 1 ('bad')" in str(bad) and "'colour'" in str(bad) and "unknown key" in str(bad)
    assert isinstance(dup, ConfigError) and "duplicate" in str(dup)


def test_pool_must_be_a_list(tmp_path: Path):
    pool = tmp_path / "engine_pool.json"
    pool.write_text("{}")
    with pytest.raises(ConfigError, match="JSON list"):
        parse_pool(pool)
    pool.write_text("[{,")
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        parse_pool(pool)


def test_model_config_bad_value_is_named(tmp_path: Path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(annotation_config(thresh=2.0)))
    with pytest.raises(ConfigError) as err:
        load_model_config(path, "my_model")
    assert "m.json" in str(err.value) and "'my_model'" in str(err.value) and "key 'thresh'" in str(err.value)


def test_annotation_needs_roi_padding_sigma_and_they_must_match_the_transforms():
    cfg = annotation_config()
    del cfg["sigma"]
    with pytest.raises(ValueError, match="sigma"):
        ModelConfig.model_validate(cfg)
    with pytest.raises(ValueError, match="padding"):
        ModelConfig.model_validate(annotation_config(padding=30.0))


def test_expressions_are_refused():
    cfg = annotation_config()
    cfg["pre_transforms"][0]["args"]["keys"] = "$import os"
    with pytest.raises(ValueError, match="expressions"):
        ModelConfig.model_validate(cfg)


def test_version_becomes_a_string():
    assert ModelConfig.model_validate(annotation_config(version=2)).version == "2"


def test_ensemble_replaces_model_path_and_members_inherit_the_network():
    cfg = annotation_config()
    net = cfg["network"]
    del cfg["model_path"]
    with pytest.raises(ValueError, match="either 'model_path' or an 'ensemble'"):
        ModelConfig.model_validate(cfg)
    with pytest.raises(ValueError, match="at least two"):
        ModelConfig.model_validate({**cfg, "ensemble": [{"model_path": "a.pt"}]})
    with pytest.raises(ValueError, match="either 'model_path' or an 'ensemble'"):
        ModelConfig.model_validate({**cfg, "model_path": "m.pt", "ensemble": [{"model_path": "a.pt"}] * 2})
    other = {"name": "BasicUNet", "args": {"spatial_dims": 3, "in_channels": 2, "out_channels": 1}}
    config = ModelConfig.model_validate({**cfg, "ensemble": [{"model_path": "a.pt"},
                                                             {"model_path": "b.pt", "network": other}]})
    first, second = config.members()
    assert (first.model_path, first.network.name) == ("a.pt", net["name"])
    assert (second.model_path, second.network.name) == ("b.pt", "BasicUNet")
    assert not first.ensemble and first.roi == config.roi
    del cfg["network"]
    with pytest.raises(ValueError, match="every ensemble member"):
        ModelConfig.model_validate({**cfg, "ensemble": [{"model_path": "a.pt"}, {"model_path": "b.pt", "network": other}]})


def test_every_ensemble_member_names_its_weights_and_nothing_else():
    cfg = annotation_config()
    del cfg["model_path"]
    for member in ({"network": cfg["network"]}, {"model_path": "a.pt", "ensemble": []}):
        with pytest.raises(ValueError, match="ensemble"):
            ModelConfig.model_validate({**cfg, "ensemble": [{"model_path": "b.pt"}, member]})
