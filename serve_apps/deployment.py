"""The API as a Ray Serve application: a FastAPI ingress over the running pipeline's writer and hub actors.

:func:`api_application` binds the deployment; :func:`deploy_api` runs it on the local Serve HTTP proxy
(127.0.0.1:8000 by default). The FastAPI app is built on each replica (:func:`build_api`) from what the driver
passes: where the hashed API keys live, and the namespace of the pipeline's named actors, which the replica looks
up itself (``writer`` reads the store it owns; ``hub`` holds the status and the latest features). Replicas ask for
a fraction of a CPU: the machine this runs on is small, and the work per request is a lookup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from actors.asset import NAMESPACE
from actors.hub import HUB_ACTOR_NAME
from actors.writer import WRITER_ACTOR_NAME
from serve_apps.api import create_app
from serve_apps.backend import RayBackend
from serve_apps.keys import KeyStore

#: Name of the Serve application.
APP_NAME = "sentinel-api"
#: CPUs of each API replica.
API_REPLICA_CPUS = 0.1


def build_api(keys_path: str, namespace: str = NAMESPACE) -> FastAPI:
    """The FastAPI app of one replica: the pipeline's actors found by name, the key store at ``keys_path``."""
    writer = ray.get_actor(WRITER_ACTOR_NAME, namespace=namespace)
    hub = ray.get_actor(HUB_ACTOR_NAME, namespace=namespace)
    return create_app(RayBackend(writer, hub), KeyStore(Path(keys_path)))


def api_application(
    keys_path: Path, namespace: str = NAMESPACE, num_replicas: int = 1, max_ongoing_requests: int = 256
) -> Any:
    """The bound Serve application of the API (pass it to ``serve.run``)."""
    path = str(keys_path)

    def builder() -> FastAPI:
        # Serve calls a plain function (not a partial) on each replica to build the app
        return build_api(path, namespace)

    deployment: Any = serve.deployment(
        serve.ingress(builder)(),
        name="api",
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": API_REPLICA_CPUS},
    )
    return deployment.bind()


def deploy_api(
    keys_path: Path, namespace: str = NAMESPACE, host: str = "127.0.0.1", port: int = 8000, num_replicas: int = 1
) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and run the API there; returns its base URL."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(api_application(keys_path, namespace, num_replicas), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"
