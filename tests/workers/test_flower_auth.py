"""Flower as `ferqueue flower` serves it: every page, /metrics and /healthcheck included, asks
for the credentials. A real Flower process on the test's own Redis database."""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request

import pytest
from fq_cluster import FERQUEUE

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str, credentials: bytes | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_every_flower_page_asks_for_the_credentials(make_cluster):
    cluster = make_cluster()
    port = _free_port()
    flower = cluster.spawn([FERQUEUE, "flower", "--port", str(port)], "flower",
                           FERQUEUE_FLOWER_USER="ops", FERQUEUE_FLOWER_PASSWORD="s3cret")
    try:
        cluster.wait(lambda: flower.poll() is None and _get(port, "/healthcheck", None), 60, "Flower to listen")
        for path in ("/", "/workers", "/api/workers", "/metrics", "/healthcheck"):
            assert _get(port, path, None) == 401, f"{path} answers without credentials"
            assert _get(port, path, b"ops:wrong") == 401, f"{path} answers with a wrong password"
        assert _get(port, "/metrics", b"ops:s3cret") == 200
        assert _get(port, "/healthcheck", b"ops:s3cret") == 200
    finally:
        flower.terminate()
        flower.wait(10)
