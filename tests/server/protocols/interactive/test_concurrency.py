"""Several annotators on one model copy: sessions in parallel, network calls serialised by the model's gate."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import standin_pool
from helpers import bright_interactive_net, interactive_config, phantom, serve_in_thread

from engines.config.model import ModelConfig
from engines.data.io import write_volume
from engines.tasks.interactive import InteractiveEngine
from server.app import create_app
from server.settings import Settings


class CountingNetwork:
    """The stand-in network, recording how many calls ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0

    def __call__(self, x):
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.01)  # hold the network long enough for overlaps to show
            return bright_interactive_net(x)
        finally:
            with self.lock:
                self.running -= 1


def test_sessions_in_parallel_share_one_model_and_its_gate():
    network = CountingNetwork()
    pool = standin_pool()
    pool.add(InteractiveEngine("interactive_test", ModelConfig.model_validate(interactive_config()), network))
    settings = Settings(config="unused.json", max_running_per_model=1, max_queued_per_model=32, max_voxels=200_000)
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32")

    def annotate(url: str) -> tuple[int, int]:
        with httpx.Client(base_url=url, timeout=60) as http:
            sid = http.put("/session/", files={"image": ("image.nii.gz", data)}).json()["session_id"]
            for body in ({"type": "point", "points": [[18, 25, 15]]},
                         {"type": "point", "positive": False, "points": [[18, 25, 20]]},
                         {"type": "box", "box": [[10, 15, 15], [26, 35, 15]]}):
                assert http.post(f"/v1/interactive/{sid}/prompt?model=interactive_test", json=body).status_code == 200
            assert http.post(f"/v1/interactive/{sid}/undo").status_code == 200
            state = http.get(f"/v1/interactive/{sid}").json()
            mask = http.get(f"/v1/interactive/{sid}/mask?format=json").json()
            return state["steps"], mask["voxels"]

    with serve_in_thread(create_app(settings, pool)) as port:
        url = f"http://127.0.0.1:{port}"
        with ThreadPoolExecutor(4) as executor:
            results = list(executor.map(lambda _: annotate(url), range(4)))
    assert network.most == 1 and network.calls >= 12  # one model copy, one network call at a time
    assert len(set(results)) == 1 and results[0][0] == 2  # every session got the same, independent result
