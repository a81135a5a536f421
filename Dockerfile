# GPU image: installs and serves exactly like `make serve` (same Makefile, same pins).
# Build: docker build -t aiaa-server .    Run: docker run --gpus all -p 5000:5000 aiaa-server
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev make curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aiaa
COPY pyproject.toml README.md Makefile ./
COPY engines ./engines
COPY server ./server
# `make install` also installs the client distribution (pip install ./client[nifti]).
COPY client ./client
# On PyPI, torch==2.13.0 for Linux x86_64 is the CUDA build: the same pin as the Makefile serves the GPU here.
# The GPU extras: TensorRT (NVIDIA's wheels fetch their libraries at install time, which works here with
# network access) and ONNX Runtime's CUDA build in place of the CPU one.
RUN make install PYTHON=python3 EXTRAS=openvino,onnx,tensorrt \
 && .venv/bin/pip uninstall -y -q onnxruntime && .venv/bin/pip install -q onnxruntime-gpu
COPY engine_pool.json ./
COPY model_configs ./model_configs
COPY models ./models

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD curl -fs http://127.0.0.1:5000/health/ready || exit 1
# One process per GPU: every worker would hold its own copy of every model.
CMD [".venv/bin/aiaa", "serve", "--config", "engine_pool.json", "--host", "0.0.0.0", "--port", "5000"]
