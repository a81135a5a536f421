# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 5000
CONFIG ?= engine_pool.json
# torch first, pinned: a loose "torch" would pull several GB of CUDA packages on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
# Optional runtimes served by default on CPUs (the Dockerfile adds tensorrt for GPUs).
EXTRAS ?= dev,openvino,onnx,train,bundle
BIN := $(VENV)/bin

.PHONY: install serve test bench clean viewer interactive-export

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q "./client[nifti]"
	touch $@

serve: install
	$(BIN)/aiaa serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

# Rebuild the browser viewer's assets (server/static/, committed) from viewer/ with the pinned lockfile.
# Needs Node and npm; serving them does not.
viewer:
	cd viewer && npm ci --no-audit --no-fund && npm run build

bench: install
	$(BIN)/python bench/bench_inference.py

# Re-export the shipped interactive model to OpenVINO after its weights changed (a stale export is never served:
# its report records the weights' sha256) and check the whole interactive protocol on 10 hippocampus objects
# against PyTorch; fails unless both agree.
INTERACTIVE_EXPORT ?= models/interactive_any/openvino_fp32
interactive-export: install
	$(BIN)/python -m server.cli.main export --config model_configs/interactive_any.json --format openvino \
		--max-cases 10 --output $(INTERACTIVE_EXPORT)
	$(BIN)/python bench/bench_interactive_export.py --config model_configs/interactive_any.json \
		--export $(INTERACTIVE_EXPORT) --objects 10 -o $(INTERACTIVE_EXPORT)/protocol_parity.json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
