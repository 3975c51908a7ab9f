# One image for every vidmon process: the API, the monitor, training and the MLflow server.
#   docker build --build-arg VARIANT=cpu  -t vidmon:cpu .    (torch's CPU build, ~1 GB smaller)
#   docker build --build-arg VARIANT=cuda -t vidmon:cuda .   (torch's CUDA build from PyPI; it
#                                                             brings its CUDA libraries, the host
#                                                             needs the NVIDIA container toolkit)
#   --build-arg BASE=<image> builds on another Python 3.11+ base (an imported Debian base
#   where no registry is reachable, a CUDA base); python3 and pip must be on its PATH.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
# Where the CPU build of torch comes from: PyTorch's own index, or a mirror of it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN case "$VARIANT" in \
      cpu)  pip install "torch==${TORCH_VERSION}+cpu" --index-url "$TORCH_INDEX_URL" ;; \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      *)    echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1 ;; \
    esac

WORKDIR /app
COPY pyproject.toml README.md ./
# vidmon's dependencies in a layer of their own (an empty vidmon carries them in), so that a
# change to its code rebuilds in seconds.
RUN pip install . && pip uninstall -y -q vidmon
COPY monitor monitor
COPY serving serving
COPY training training
COPY simulations simulations
RUN pip install --no-deps .

RUN useradd --create-home --uid 1000 vidmon && mkdir -p /data && chown vidmon /data
USER vidmon
WORKDIR /data
EXPOSE 8000 5000
CMD ["vidmon", "serve", "--host", "0.0.0.0"]
