"""The local REST API on the documented VIAS paths (FastAPI, served by uvicorn in its own thread)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.control.payload import decode_json
from agent.tasks.errors import ApiError, ErrorCode, internal, invalid, unauthorized
from agent.tasks.model import MAX_BODY_BYTES
from agent.tasks.service import TaskService

log = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
# Everything else needs the token, the OpenAPI schema included: a path added later is closed unless listed here.
OPEN_PATHS = frozenset({"/healthz", "/metrics"})


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.http_status)


async def _read_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise invalid("body", f"is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:  # stop reading: a huge upload must not fill memory
            raise invalid("body", f"is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return decode_json(b"".join(chunks))


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, "must be an integer") from None


def create_app(service: TaskService, token: str | None, *,
               extra_status: StatusProvider | None = None,
               metrics: Callable[[], tuple[bytes, str]] | None = None,
               dead_letters: Callable[[int], list[dict[str, Any]]] | None = None) -> FastAPI:
    """The API. ``token`` None means every call but OPEN_PATHS is refused: the agent always configures one.

    The schema is served at /openapi.json to token holders; the interactive /docs and /redoc pages are not
    served (they load scripts from a CDN and could not send the token)."""
    app = FastAPI(title="edge-agent", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    expected = token.encode() if token else None

    @app.middleware("http")
    async def _auth_and_errors(request: Request, call_next: Callable[[Request], Any]) -> Response:
        try:
            if request.url.path not in OPEN_PATHS:
                given = request.headers.get("x-auth-token", "").encode()
                if expected is None or not hmac.compare_digest(given, expected):
                    return _error(unauthorized())
            response: Response = await call_next(request)
            return response
        except ApiError as exc:
            return _error(exc)
        except Exception:  # the body says only "internal"; the log has the trace
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            return _error(internal())

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            error = ApiError(ErrorCode.INVALID_PARAMS, "method not allowed on this path", [], "method not allowed",
                             "See docs/api.md for the endpoints.")
            return JSONResponse(error.body(), status_code=405)
        error = ApiError(ErrorCode.NOT_FOUND, "no such endpoint", [], "unknown path",
                         "See docs/api.md for the endpoints.")
        return JSONResponse(error.body(), status_code=404)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("path", "query", "body")]
        return _error(invalid(".".join(loc) or "request", str(first.get("msg", "invalid request"))))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok"}
        if extra_status is not None:
            body.update(extra_status())
        return body

    if metrics is not None:
        @app.get("/metrics")
        def prometheus() -> Response:
            payload, content_type = metrics()
            return Response(payload, media_type=content_type)

    @app.post("/v2/{project_id}/services/{service_name}/tasks")
    async def create_task(project_id: str, service_name: str, request: Request) -> dict[str, Any]:
        body = await _read_body(request)
        template = request.query_params.get("template")
        task_id = service.create(project_id, service_name, body, template=template)
        return {"tasks": [{"id": task_id}]}

    @app.get("/v2/{project_id}/tasks")
    def list_tasks(project_id: str, request: Request) -> dict[str, Any]:
        return service.list_tasks(
            project_id,
            state=request.query_params.get("task_state") or None,
            name=request.query_params.get("task_name") or None,
            page=_int_param(request, "page", 0),
            page_size=_int_param(request, "page_size", 100),
        )

    @app.get("/v2/{project_id}/tasks/{task_id}")
    def show_task(project_id: str, task_id: str) -> dict[str, Any]:
        return service.show(project_id, task_id)

    @app.put("/v2/{project_id}/tasks/{task_id}")
    async def update_task(project_id: str, task_id: str, request: Request) -> Response:
        body = await _read_body(request)
        service.update(project_id, task_id, body)
        return PlainTextResponse("", status_code=200)

    @app.delete("/v2/{project_id}/tasks/{task_id}")
    def delete_task(project_id: str, task_id: str) -> Response:
        service.delete(project_id, task_id)
        return PlainTextResponse("", status_code=200)

    @app.put("/v2/{project_id}/tasks/{task_id}/action/{action}")
    def task_action(project_id: str, task_id: str, action: str) -> Response:
        if action == "start":
            service.start(project_id, task_id)
        elif action == "stop":
            service.stop(project_id, task_id)
        else:
            raise invalid("action", "must be start or stop")
        return PlainTextResponse("", status_code=200)

    @app.get("/v2/{project_id}/templates")
    def list_templates(project_id: str) -> dict[str, Any]:
        return {"templates": service.templates(project_id)}

    if dead_letters is not None:
        @app.get("/v2/{project_id}/dead-letters")
        def list_dead_letters(project_id: str, request: Request) -> dict[str, Any]:
            limit = _int_param(request, "limit", 100)
            if not 1 <= limit <= 1000:
                raise invalid("limit", "must be 1 to 1000")
            return {"dead_letters": dead_letters(limit)}

    return app


class _OnePerSecondServer(uvicorn.Server):
    """uvicorn whose housekeeping loop wakes once a second instead of ten times, and at once on stop.

    uvicorn's loop only refreshes the Date header (once a second) and polls its exit flag; its 0.1 s
    wake-ups were 80 % of an idle agent's CPU (0.12 of 0.15 s a minute, measured per thread:
    docs/benchmarks.md), which a paced file or a quiet box pays for nothing.
    """

    _TICK_S = 1.0
    _TICKS_PER_SECOND = 10  # uvicorn refreshes the Date header when ``counter % 10 == 0``

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_requested: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._exit_requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + self._TICKS_PER_SECOND) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), self._TICK_S)

    def request_exit(self) -> None:
        """Ask the server to stop; callable from any thread."""
        self.should_exit = True
        loop, event = self._loop, self._exit_requested
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: the server has stopped
                loop.call_soon_threadsafe(event.set)


class ApiServer:
    """uvicorn in a named thread, so the REST API keeps answering whatever the data plane does."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=3)
        self._server = _OnePerSecondServer(config)
        self._thread = threading.Thread(target=self._server.run, name="rest-api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        stop = threading.Event()
        while not self._server.started and self._thread.is_alive() and not stop.wait(0.02):
            timeout -= 0.02
            if timeout <= 0:
                break
        if not self._server.started:
            raise RuntimeError("the REST API did not start (is the listen address in use?)")

    def stop(self, timeout: float = 5.0) -> None:
        self._server.request_exit()
        self._thread.join(timeout)
