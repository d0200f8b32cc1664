# One image for every ferqueue role in docker-compose.yml: migrate, workers, flower, the CLI.
# VARIANT=gpu installs TensorFlow with its CUDA libraries (the [gpu] extra) for GPU workers:
#   docker build -t ferqueue:latest .                          (CPU)
#   docker build --build-arg VARIANT=gpu -t ferqueue:gpu .     (GPU: needs the NVIDIA Container Toolkit to run)
FROM python:3.11-slim

ARG VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    KERAS_BACKEND=tensorflow \
    FERQUEUE_HOME=/data

WORKDIR /app
COPY . /app
# a plain install: the Alembic migrations ship inside the package (`ferqueue db upgrade`)
RUN case "$VARIANT" in \
        cpu) pip install /app ;; \
        gpu) pip install "/app[gpu]" ;; \
        *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && useradd --create-home --uid 1000 ferqueue \
    && mkdir -p /data /datasets /keras \
    && chown ferqueue /data /keras

# workers and Flower need no privileges: run them as an unprivileged user
USER ferqueue
CMD ["ferqueue", "--help"]
