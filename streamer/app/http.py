"""The service's HTTP endpoints for operators: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streamer.observability.logs import get_logger
from streamer.observability.metrics import Health, Metrics

log = get_logger(__name__)



class HealthServer:
    """aiohttp server for /metrics, /healthz (alive) and /readyz (dependencies ready)."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        self._metrics = metrics
        self._health = health
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        sockets = site._server.sockets if site._server else []  # aiohttp has no public accessor
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("http endpoints listening", host=self._host, port=self.bound_port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        self._metrics.ready.set(1 if self._health.ready else 0)
        body = await asyncio.to_thread(self._metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        body = {"ready": self._health.ready, "components": self._health.components, "detail": self._health.detail}
        return web.Response(
            text=json.dumps(body), status=200 if self._health.ready else 503, content_type="application/json"
        )


