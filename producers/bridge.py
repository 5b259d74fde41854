"""`layerfill run bridge`: HTTP endpoints for registry notifications -> ManifestPulled on Kafka.

A request is answered 2xx only after Kafka acknowledged every event in it, so when Kafka is down the registry
gets a 5xx and its own retry (threshold/backoff) redelivers later: nothing is lost."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from layerfill.config.settings import Settings
from layerfill.kafka.producer import KafkaUnavailable
from layerfill.observability import build_info  # noqa: F401  (registers layerfill_build_info)

from . import distribution, harbor
from .auth import authorized
from .metrics import EVENTS, PUBLISH_SECONDS, REQUESTS
from .publisher import Publisher
from .pull_event import MalformedBody, Parsed

log = logging.getLogger("layerfill.bridge")

Parser = Callable[[bytes, str | None], Parsed]


class BodyTooLarge(Exception):
    pass


class JSONResponse(_StarletteJSONResponse):
    """ASCII-only JSON. Answers echo what the caller sent (an ignored action, a reason naming a value), and a
    JSON string escape like "\\ud800" decodes to a lone surrogate that UTF-8 cannot encode: Starlette's own
    rendering raised on it and the registry got a 500 for a batch it would then retry forever."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    # isascii(): headers decode as latin-1, and str.isdigit() accepts '²', which int() refuses.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, publisher: Publisher | None = None) -> Starlette:
    pub = publisher or Publisher(settings)
    cfg = settings.bridge
    token = cfg.token.get_secret_value() if cfg.token else None

    def endpoint(name: str, parse: Parser, content_types: frozenset[str] | None):
        async def handle(request: Request) -> Response:
            resp = await _handle(request, name, parse, content_types)
            REQUESTS.labels(name, str(resp.status_code)).inc()
            return resp

        return handle

    async def _handle(request: Request, name: str, parse: Parser, content_types: frozenset[str] | None) -> Response:
        if not authorized(request.headers, token):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_types is not None and ctype not in content_types:
            return JSONResponse(
                {"error": f"unsupported content type {ctype or '(none)'}; expected one of {sorted(content_types)}"},
                status_code=415,
            )
        try:
            body = await _read_capped(request, cfg.max_body_bytes)
        except BodyTooLarge:
            return JSONResponse({"error": f"body larger than {cfg.max_body_bytes} bytes"}, status_code=413)
        try:
            parsed = parse(body, cfg.registry_name)
        except MalformedBody as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # a parser bug must not become a 5xx loop at the registry
            log.exception("parser failed on %s body", name)
            return JSONResponse({"error": f"unparseable body: {type(exc).__name__}"}, status_code=400)
        for reason, n in parsed.ignored.items():
            EVENTS.labels(name, f"ignored_{reason.split(':')[0]}").inc(n)
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, pub.publish, parsed.events, parsed.invalid)
        except KafkaUnavailable as exc:
            log.warning("kafka unavailable, answering 503: %s", exc)
            return JSONResponse({"error": f"Kafka unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"})
        except ValueError as exc:  # encoding refused a value: it is the input's fault
            return JSONResponse({"error": str(exc)}, status_code=400)
        PUBLISH_SECONDS.observe(time.perf_counter() - started)
        EVENTS.labels(name, "published").inc(len(parsed.events))
        EVENTS.labels(name, "dead_lettered").inc(len(parsed.invalid))
        for ev in parsed.events:
            log.info(
                "published",
                extra={
                    "event_id": ev.event_id,
                    "repository": ev.repository,
                    "digest": ev.digest,
                    "registry": ev.registry,
                },
            )
        return JSONResponse(
            {
                "published": len(parsed.events),
                "dead_lettered": len(parsed.invalid),
                "ignored": parsed.ignored,
                "event_ids": [e.event_id for e in parsed.events],
            }
        )

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route(
            "/v1/notifications/distribution",
            endpoint("distribution", distribution.parse_envelope, distribution.ENVELOPE_TYPES),
            methods=["POST"],
        ),
        Route("/v1/webhooks/harbor", endpoint("harbor", harbor.parse_webhook, None), methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", healthz),
        Route("/metrics", metrics),
    ]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        log.info("bridge serving", extra={"host": cfg.host, "port": cfg.port})
        yield
        # Runs after uvicorn has drained in-flight requests and before it re-raises SIGTERM (which would skip
        # any `finally` around uvicorn.run): the producer is flushed and its poller stopped on every shutdown.
        await asyncio.to_thread(pub.close)
        log.info("bridge stopped; producer flushed")

    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: Settings) -> None:
    import uvicorn

    app = create_app(settings)
    uvicorn.run(app, host=settings.bridge.host, port=settings.bridge.port, log_level="warning", access_log=False)
