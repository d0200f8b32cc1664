# One image for every ferqueue role in docker-compose.yml: migrate, workers, flower, the CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    KERAS_BACKEND=tensorflow \
    FERQUEUE_HOME=/data

WORKDIR /app
COPY . /app
# a plain install: the Alembic migrations ship inside the package (`ferqueue db upgrade`)
RUN pip install /app \
    && useradd --create-home --uid 1000 ferqueue \
    && mkdir -p /data \
    && chown ferqueue /data

# workers and Flower need no privileges: run them as an unprivileged user
USER ferqueue
CMD ["ferqueue", "--help"]
