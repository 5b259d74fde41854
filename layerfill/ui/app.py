"""The status page: a Starlette app rendering Jinja2 templates from the state DB and the DLQ topic, read-only.

GET /                         images (complete / partial / ...), scans, dead letters by cause
GET /image/REGISTRY/REPO@DIG  one image: its image manifests (platform, scan, vulnerabilities) and blobs
GET /healthz, /readyz          liveness"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from layerfill.config.settings import Settings
from layerfill.ops.deadletters import DeadLetter
from layerfill.state.records import ImageStatus
from layerfill.state.store import StateStore

from .content import ConfigPlatforms
from .views import Cause, causes, human_bytes, image_view, parse_image_path, scan_totals

log = logging.getLogger(__name__)


@dataclass
class DeadLetterSample:
    causes: list[Cause]
    count: int
    error: str | None = None


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("layerfill.ui", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["bytes"] = human_bytes
    env.filters["short"] = lambda d: (d or "").split(":", 1)[-1][:12]
    env.filters["when"] = lambda t: "-" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")
    return env


def _dead_letters_from_kafka(settings: Settings, max_age_s: float = 5.0) -> Callable[[], DeadLetterSample]:
    """The DLQ's newest dead letters grouped by cause, read at most every `max_age_s` (page loads share a read)."""
    from layerfill.ops.deadletters import tail_dead_letters
    from layerfill.wiring import make_codec

    codec = make_codec(settings)
    lock = threading.Lock()
    last: list[tuple[float, DeadLetterSample]] = []

    def read() -> DeadLetterSample:
        with lock:
            if last and time.monotonic() - last[0][0] < max_age_s:
                return last[0][1]
            try:
                found: list[DeadLetter]
                found, _ = tail_dead_letters(
                    settings.kafka, settings.topics.dlq.name, codec, settings.ui.dead_letter_sample, timeout=5
                )
                sample = DeadLetterSample(causes(found), len(found))
            except Exception as exc:  # Kafka down or the topic missing: the rest of the page still renders
                sample = DeadLetterSample([], 0, f"{settings.topics.dlq.name}: {exc}")
            last[:] = [(time.monotonic(), sample)]
            return sample

    return read


def create_app(
    settings: Settings,
    *,
    store: StateStore | None = None,
    platform_for: Callable[[str], str | None] | None = None,
    dead_letters: Callable[[], DeadLetterSample] | None = None,
) -> Starlette:
    state = store or StateStore(settings.state.database_url)
    platforms = platform_for or ConfigPlatforms(settings.s3)
    read_dead_letters = dead_letters or _dead_letters_from_kafka(settings)
    templates = _templates()
    limit = settings.ui.image_limit

    def render(name: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(
            **context, state_db=state.url, now=time.strftime("%Y-%m-%d %H:%M:%S")
        )
        return HTMLResponse(html, status_code=http_status)

    def views_of(images: list) -> list:
        return [
            image_view(
                i,
                state.image_blobs(i.registry, i.repository, i.digest),
                lambda d, r=i.registry: state.scan_for(r, d),
                platforms,
            )
            for i in images
        ]

    def index_page(request: Request) -> Response:
        status = request.query_params.get("status") or None
        prefix = request.query_params.get("repository") or None
        try:
            images = state.list_images(status=status, repository_prefix=prefix, limit=limit)
        except ValueError as exc:
            return render("error.html", 400, message=str(exc))
        views = views_of(images)
        return render(
            "index.html",
            views=views,
            totals=state.totals(),
            scans=scan_totals(views),
            statuses=[s.value for s in ImageStatus],
            status=status,
            prefix=prefix,
            limit=limit,
            dead=read_dead_letters(),
        )

    def image_page(request: Request) -> Response:
        try:
            registry, repository, digest = parse_image_path(request.path_params["rest"])
            image = state.image_status(registry, repository, digest)
        except ValueError as exc:
            return render("error.html", 404, message=str(exc))
        if image is None:
            return render("error.html", 404, message=f"no image {registry}/{repository}@{digest} in the state DB")
        (view,) = views_of([image])
        return render("image.html", v=view)

    async def page(request: Request, handler: Callable[[Request], Response]) -> Response:
        # The state DB and Kafka clients block: keep them off the event loop.
        return await asyncio.to_thread(handler, request)

    async def index(request: Request) -> Response:
        return await page(request, index_page)

    async def image(request: Request) -> Response:
        return await page(request, image_page)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_: Starlette):
        log.info("status page serving", extra={"host": settings.ui.host, "port": settings.ui.port})
        yield
        if store is None:
            state.close()
        if isinstance(platforms, ConfigPlatforms):
            platforms.close()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/image/{rest:path}", image, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.ui.host, port=settings.ui.port, log_level="warning",
                access_log=False)  # fmt: skip
