"""Drive the real napari-nninteractive plugin (remote mode) against a running server; print JSON.

Usage (in its own environment: napari is not one of our dependencies)::

    python -m venv /tmp/napari && /tmp/napari/bin/pip install "napari[pyqt5]" napari-nninteractive==2.5.4 \
        nninteractive-client==2.6.0 nibabel scipy
    apt-get install xvfb libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
        libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-cursor0      # a headless X for Qt + GL
    LIBGL_ALWAYS_SOFTWARE=1 xvfb-run -a /tmp/napari/bin/python bench/napari_plugin_check.py \
        http://127.0.0.1:5000/nninteractive IMAGE LABEL 3 out.json

It does what an annotator does with the plugin's own widget and layers: *Initialize* (the plugin
claims a lease and uploads the image), a 2D box on the object's largest axial slice drawn in the
plugin's box layer, then three clicks in its point layer at the centre of the largest error
(positive where the object is missed, negative where the mask overflows), then *Undo*. It records
the Dice of the plugin's label layer (the client's target buffer) against LABEL (voxels whose value is
one of the comma-separated LABEL_VALUES) after each step, the step's time as the plugin's GUI sees
it, and whether undo restored the mask exactly.
"""
import json
import sys
import time
from pathlib import Path

import napari
import nibabel as nib
import numpy as np
from napari_nninteractive.widget_main import nnInteractiveWidget
from qtpy.QtWidgets import QApplication
from scipy import ndimage

url, image_path, label_path, values, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
values = [int(v) for v in values.split(",")]


image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
truth = np.isin(np.asarray(nib.load(label_path).dataobj), values)

viewer = napari.Viewer(show=False)
viewer.add_image(image, name="image")
widget = nnInteractiveWidget(viewer)
app = QApplication.instance()


def pump(until, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        app.processEvents()
        if until():
            return True
        time.sleep(0.01)
    raise TimeoutError("the plugin did not get there in time")


def dice(mask):
    m = mask > 0
    return float(2 * (m & truth).sum() / max(m.sum() + truth.sum(), 1))


report = {"plugin": "napari-nninteractive", "url": url, "image": image_path, "shape": list(image.shape),
          "remote_mode": bool(widget._remote_mode), "steps": []}
widget.server_url_edit.setText(url)
widget.image_selection.setCurrentText("image")
t0 = time.perf_counter()
widget.on_init()
pump(lambda: widget.session is not None and widget.label_layer_name in viewer.layers
     and getattr(widget, "_upload_dialog", None) is None and widget._session_locked)
pump(lambda: widget._upload_dialog is None)
report["initialize_ms"] = round((time.perf_counter() - t0) * 1000, 1)
report["lease"] = type(widget.session).__name__
result = widget._data_result

# 2D box on the largest axial slice (axis 2), as a user draws it in the plugin's bbox layer
k = int(np.argmax(truth.sum(axis=(0, 1))))
ii, jj = np.nonzero(truth[:, :, k])
corners = np.array([[ii.min(), jj.min(), k], [ii.min(), jj.max(), k], [ii.max(), jj.max(), k], [ii.max(), jj.min(), k]],
                   dtype=float)


snapshots = []


def step(kind, index, data, positive=True):
    widget.interaction_button._uncheck()
    widget.interaction_button._check(index)
    widget.on_interaction_selected()
    widget.prompt_button._uncheck()
    widget.prompt_button._check(0 if positive else 1)
    widget.on_prompt_selected()
    layer = viewer.layers[widget.layer_dict[index]]
    t = time.perf_counter()
    layer.add(data)
    app.processEvents()
    ms = (time.perf_counter() - t) * 1000
    snapshots.append(result > 0)
    report["steps"].append({"prompt": kind, "positive": positive, "dice": round(dice(result), 4),
                            "ms": round(ms, 1), "foreground_voxels": int((result > 0).sum())})


step("box2d", 1, corners)
for _ in range(3):
    pred = result > 0
    missed, extra = truth & ~pred, pred & ~truth
    best = None
    for err, positive in ((missed, True), (extra, False)):
        lab, n = ndimage.label(err, structure=np.ones((3, 3, 3)))
        if n:
            sizes = ndimage.sum(err, lab, range(1, n + 1))
            comp = lab == (int(np.argmax(sizes)) + 1)
            if best is None or comp.sum() > best[0].sum():
                best = (comp, positive)
    if best is None:
        break
    dist = ndimage.distance_transform_edt(best[0])
    point = np.array(np.unravel_index(int(np.argmax(dist)), dist.shape), dtype=float)
    step("point", 0, point[None], best[1])

t = time.perf_counter()
widget.on_undo()
app.processEvents()
report["undo"] = {"ms": round((time.perf_counter() - t) * 1000, 1), "dice": round(dice(result), 4),
                  "equals_mask_before_last_step": bool(np.array_equal(result > 0, snapshots[-2]))}
widget._release_session()
Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
print(json.dumps(report, indent=2))
