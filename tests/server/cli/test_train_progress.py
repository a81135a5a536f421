"""What ``aiaa train`` shows: a progress bar on a terminal, JSON lines in the progress file."""

import json

from server.cli.train_progress import TrainProgress


def _event(epoch, batch, **metrics):
    return {"event": "batch", "epoch": epoch, "epochs": 2, "batch": batch, "batches": 4,
            "progress": ((epoch - 1) * 4 + batch) / 8, "eta_s": 3.0, "metrics": metrics}


def test_a_terminal_gets_a_bar_with_epoch_loss_and_dice(capsys):
    reporter = TrainProgress(tty=True)
    reporter(_event(1, 4, loss=0.5))
    reporter(_event(2, 2, loss=0.25, dice=0.8))
    reporter.close()
    err = capsys.readouterr().err
    assert "6/8" in err and "epoch=2/2" in err and "loss=0.2500" in err and "dice=0.800" in err


def test_the_progress_file_gets_json_lines_and_the_stop_file_is_watched(tmp_path, capsys):
    reporter = TrainProgress(str(tmp_path / "progress.jsonl"), str(tmp_path / "STOP"), tty=False)
    reporter(_event(1, 1, loss=0.5))
    assert not reporter.should_stop()
    (tmp_path / "STOP").touch()
    assert reporter.should_stop()
    reporter.close()
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["metrics"] == {"loss": 0.5}
    assert capsys.readouterr().err == ""  # no bar off a terminal
