import json

from server.cli.main import build_parser, main


def test_serve_defaults_match_the_quick_start():
    args = build_parser().parse_args(["serve"])
    assert (args.config, args.host, args.port) == ("engine_pool.json", "127.0.0.1", 5000)
    args = build_parser().parse_args(["serve", "--config", "x.json", "--host", "0.0.0.0", "--port", "8000"])
    assert (args.config, args.host, args.port) == ("x.json", "0.0.0.0", 8000)


def test_train_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"type": "segmentation"}))
    code = main(["train", "--config", str(bad), "--datalist", str(tmp_path / "d.json"),
                 "--train-config", str(tmp_path / "t.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "key 'labels'" in err
