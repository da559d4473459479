# syntax=docker/dockerfile:1
# streamer: Kafka headlines -> FlagEmbedding -> Milvus -> HDBSCAN, with /metrics /healthz /readyz.
#
#   docker build -t streamer:0.1.0 .
#   docker run --rm -v streamer-models:/models -e STREAMER_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
#       -e STREAMER_MILVUS__URI=http://milvus:19530 streamer:0.1.0 run --role ingest
#
# Models are downloaded into the /models volume (HF_HOME) on first start unless
# STREAMER_EMBEDDING__OFFLINE=true; the bundled all-MiniLM-L6-v2 needs no download.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with streamer and its dependencies ---------------------------------
FROM ${PYTHON_IMAGE} AS build
# CPU wheels of torch: the default PyPI wheel brings ~3 GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.2"
WORKDIR /src
COPY pyproject.toml ./
COPY streamer ./streamer
RUN pip install . \
    && python -c "import streamer.app.run"

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models \
    TORCH_HOME=/models/torch \
    XDG_CACHE_HOME=/tmp/.cache \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    STREAMER_SERVICE__HTTP_HOST=0.0.0.0 \
    STREAMER_SERVICE__HTTP_PORT=9400 \
    STREAMER_SERVICE__LOG_FORMAT=json
RUN groupadd --system --gid "${UID}" streamer \
    && useradd --system --uid "${UID}" --gid streamer --home-dir /home/streamer --create-home \
        --shell /usr/sbin/nologin streamer \
    && mkdir -p /models /data \
    && chown streamer:streamer /models /data
COPY --from=build /opt/venv /opt/venv
# Milvus Lite (a *.db uri, for trying it out) writes under the working directory.
WORKDIR /data
USER 10001:10001
VOLUME ["/models"]
EXPOSE 9400
# /healthz answers as soon as the process runs; /readyz waits for Kafka, Milvus and the model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMER_SERVICE__HTTP_PORT', '9400'), timeout=4)" || exit 1
ENTRYPOINT ["streamer"]
CMD ["run"]
