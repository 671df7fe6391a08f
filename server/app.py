"""FastAPI service over search and analyses. Thin routes: the logic lives in the libraries.

Security and robustness, because this serves compliance reviews:
- Keys (``server/auth.py``): ``Authorization: Bearer KEY``, each key with a role (search <
  analyses < admin) and optionally a set of indexes; checked from the headers before any body
  is read (``server/guard.py``), which also caps bodies (chunked or not) at ``MAX_BODY``.
- Bodies are strict: unknown fields, wrong JSON types (``"k": "5"``, ``"k": true``), non-finite
  or out-of-range filter values and over-long lists are 422 naming the field.
- Analyses are jobs (``server/jobs.py``) on their own executor with a bounded queue per index
  (429 + Retry-After), so searches and ``/healthz`` are never starved by them.
- Error bodies never carry a trace or a filesystem path; a 500 names only a request id.
- Each index's store is opened once; a handle notices (by the manifest's generation) when the
  index was dropped or re-created by another process and reopens or 404s instead of serving
  deleted documents.
- An append-only audit log records every ``/v1/`` request (key id, index, route, query, count).
- ``/docs`` is off by default (Swagger UI loads its assets from a CDN; ``/openapi.json`` stays).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pydantic_core
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from analyses.operations import ANALYSES, Operation
from indexer.core.errors import SaedexError
from indexer.core.params import Params, clean_loc
from indexer.core.paths import INDEX_NAME_RE
from indexer.core.settings import settings
from indexer.encode.embedder import get_embedder
from indexer.store import catalog, list_indexes, open_store
from search.engine import SearchEngine, SearchOptions
from search.latents import LatentsParams, list_latents
from search.params import SearchParams
from server.auth import ApiKey, Authenticator, KeyConfigError, digest, keys_from_environment
from server.fairpool import FairPool
from server.guard import AuditLog, Guard
from server.jobs import JobManager, QueueFull

log = logging.getLogger("saedex.server")
STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
NAME = INDEX_NAME_RE.pattern.replace("\\Z", "$")  # pydantic's Rust regex: "$" is the very end there, and it has no \Z
MAX_WAIT_S = 60.0
LLM_WORKERS, LLM_QUEUE = 2, 8  # slow searches (LLM steps, --length-neutral): running at once, and in all (running + waiting)
LatentsQuery = LatentsParams.from_query_string()
_PATHS = re.compile(r"(?<![\w.:/])/[^\s'\"()<>,;:]+")


def public_message(msg: str) -> str:
    """An error message for a client: absolute filesystem paths replaced (they tell an attacker
    where indexes live and who runs the server)."""
    return _PATHS.sub("<path>", str(msg))


class IndexHandle:
    """One open store + search engine per index, shared by all requests (Qdrant Edge reads are
    thread-safe). ``generation`` is the manifest's: when it changes, the index was dropped and
    re-created under us and this handle is stale."""

    def __init__(self, name: str, qdrant_url: str | None):
        self.name = name
        self.store = open_store(name, qdrant_url)
        try:
            self.engine = SearchEngine(self.store, name)
        except Exception:
            self.store.close()
            raise
        self.generation = self.engine.manifest.state.generation
        self.settled: str | None = None  # manifest token whose latent table the heap was settled after
        self.token = self.store.manifest_token()
        self.checked = time.monotonic()

    def close(self) -> None:
        self.store.close()


class Registry:
    """Open index handles. ``get`` re-checks a handle's manifest at most every RECHECK_S: a
    vanished manifest means the index was dropped (404, handle closed, its jobs cancelled); a new
    generation means it was re-created (handle reopened)."""

    RECHECK_S = 1.0

    def __init__(self, qdrant_url: str | None, on_gone=None):
        self.qdrant_url = qdrant_url
        self.handles: dict[str, IndexHandle] = {}
        self.lock = threading.Lock()
        self.on_gone = on_gone or (lambda name: None)

    def get(self, name: str) -> IndexHandle:
        with self.lock:
            h = self.handles.get(name)
            if h is not None and time.monotonic() - h.checked >= self.RECHECK_S:
                h = self._recheck(h)
            if h is None:
                if name not in list_indexes(self.qdrant_url):
                    raise HTTPException(404, f"no index named {name!r}")
                h = self.handles[name] = IndexHandle(name, self.qdrant_url)
            return h

    def _recheck(self, h: IndexHandle) -> IndexHandle | None:
        h.checked = time.monotonic()
        token = h.store.manifest_token()
        if token == h.token:
            return h
        manifest = h.store.read_manifest() if token is not None else None
        if manifest is not None and manifest.get("generation") == h.generation:
            h.token = token
            return h
        log.warning("index %s was %s by another process; reopening", h.name, "dropped" if manifest is None else "re-created")
        self.handles.pop(h.name, None)
        h.close()
        self.on_gone(h.name)
        return None

    def drop_handle(self, name: str) -> None:
        with self.lock:
            h = self.handles.pop(name, None)
        if h is not None:
            h.close()

    def close(self) -> None:
        with self.lock:
            for h in self.handles.values():
                h.close()
            self.handles.clear()


def check_filters(*filters: tuple[dict, str]) -> None:
    """Filter values the model's types allow but Qdrant cannot match (non-finite numbers, long
    strings, bad field names): 422 at submission, not a failed job. Each argument is (filter, name)."""
    for where, what in filters:
        Params.to_filter(where, what)


def _api_error(e: BaseException) -> dict | None:
    """The API's one mapping of errors: a SaedexError's HTTP status and public message (None:
    unexpected - an opaque 500 with a request id)."""
    if isinstance(e, SaedexError):
        return {"status": e.http_status, "detail": public_message(str(e))}
    return None


def create_app(qdrant_url: str | None = None, api_keys: list[str] | None = None, preload: bool = True,
               keys: list[ApiKey] | None = None, audit_log: str | Path | bool | None = None, docs: bool | None = None,
               analysis_workers: int = 1, jobs_per_index: int = 8, search_workers: int | None = None,
               rate_limit: float | None = None) -> FastAPI:
    """The app. Keys: ``keys`` (ApiKey list), or ``api_keys`` (plain strings: admin keys on every
    index), or else ``SAEDEX_API_KEYS`` / ``SAEDEX_KEYS_FILE``; none at all means no auth
    (``saedex serve`` refuses that on a non-loopback address). ``audit_log``: a path, False for
    none, or None for ``SAEDEX_AUDIT_LOG`` (unset: none; ``saedex serve`` defaults to
    ``$SAEDEX_HOME/audit.jsonl``). ``docs`` (Swagger UI at /docs) defaults to
    ``SAEDEX_API_DOCS=1``."""
    if keys is None:
        if api_keys is not None:
            keys = [ApiKey(f"key-{n}", digest(k)) for n, k in enumerate(api_keys, 1)]
        else:
            keys = keys_from_environment()
    authenticator = Authenticator(keys)
    env = settings()
    audit = AuditLog((audit_log or None) if audit_log is not None else env.audit_log)
    docs = docs if docs is not None else env.api_docs
    jobs = JobManager(workers=analysis_workers, per_index=jobs_per_index, error_of=_api_error)
    registry = Registry(qdrant_url or env.qdrant_url, on_gone=jobs.cancel_index)
    # Searches get their own bounded pool (one per core; `saedex serve` makes each torch call
    # single-threaded), so 16 clients queue here instead of oversubscribing two cores, and the
    # event loop stays free for /healthz.
    # Fair between keys (server/fairpool.py): under contention each key gets an equal share.
    searchers: list[FairPool] = []
    n_searchers = search_workers or max(2, os.cpu_count() or 2)
    # Searches with an LLM step wait seconds to minutes on the endpoint: they run on a pool of
    # their own (LLM_WORKERS threads, at most LLM_QUEUE waiting: 429 beyond), so two "expand"
    # requests no longer held both search threads while a plain search waited 7 s behind them.
    # A length-neutral search (it ranks the whole filtered slice) runs there too.
    llm_pool: list[ThreadPoolExecutor] = []
    llm_waiting = threading.BoundedSemaphore(LLM_QUEUE)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        searchers.append(FairPool(n_searchers, "saedex-search"))
        llm_pool.append(ThreadPoolExecutor(max_workers=LLM_WORKERS, thread_name_prefix="saedex-llm"))
        yield
        jobs.shutdown()
        searchers.pop().shutdown()
        llm_pool.pop().shutdown(wait=False, cancel_futures=True)
        registry.close()  # flush and release the Qdrant Edge locks

    app = FastAPI(title="saedex", version="0.1.0", lifespan=lifespan, docs_url="/docs" if docs else None, redoc_url=None,
                  description="Interpretable SAE search and analyses over text collections.")
    app.state.registry = registry
    app.state.jobs = jobs
    # requests a second per key (SAEDEX_RATE_LIMIT; 0: none): bursts of twice that
    rate = rate_limit if rate_limit is not None else env.rate_limit
    app.add_middleware(Guard, authenticator=authenticator, max_body=MAX_BODY, audit=audit, rate_limit=rate)
    if preload:
        get_embedder()  # models load once, at start
        _preload_analyses()
        _settle_heap()

    def caller(role: str):
        def check(request: Request) -> ApiKey:
            key: ApiKey | None = request.state.api_key if hasattr(request.state, "api_key") else None
            if key is None:
                raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})
            if not key.may(role):
                raise HTTPException(403, f"key {key.id!r} has role {key.role!r}; this needs {role!r}")
            name = request.path_params.get("name")
            if name is not None and not key.may_index(name):
                raise HTTPException(403, f"key {key.id!r} may not use index {name!r}")
            return key
        return Depends(check)

    def audit_note(request: Request, **fields) -> None:
        request.state.audit = {**(getattr(request.state, "audit", None) or {}), **fields}

    async def in_pool(request: Request, fn, *args, llm: bool = False):
        if not llm:
            if not searchers:  # outside the lifespan (a bare app in tests)
                return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
            key = getattr(request.state, "api_key", None)
            return await asyncio.wrap_future(searchers[-1].submit(key.id if key else "", fn, *args))
        if not llm_waiting.acquire(blocking=False):
            raise HTTPException(429, f"{LLM_QUEUE} slow searches (LLM steps, length-neutral) are already waiting; retry later",
                                headers={"Retry-After": "5"})
        try:
            return await asyncio.get_running_loop().run_in_executor(llm_pool[-1] if llm_pool else None, fn, *args)
        finally:
            llm_waiting.release()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        def field(loc) -> str:
            loc = clean_loc(loc)
            return ".".join(str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path") else loc))

        errs = [{"field": field(e.get("loc", [])), "message": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errs}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"detail": public_message(exc.detail) if isinstance(exc.detail, str) else exc.detail},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(SaedexError)
    async def known_error(request: Request, exc: SaedexError):
        err = _api_error(exc)
        return JSONResponse({"detail": err["detail"]}, status_code=err["status"])

    IndexName = PathParam(..., pattern=NAME, description="index name")

    @app.get("/healthz")
    async def healthz() -> dict:
        # async: answered on the event loop, never queued behind searches or analyses
        return {"ok": True}

    @app.get("/v1/indexes")
    def indexes(key: ApiKey = caller("search")) -> dict:
        return {"indexes": [n for n in list_indexes(registry.qdrant_url) if key.may_index(n)]}

    @app.get("/v1/indexes/{name}", dependencies=[caller("search")])
    def index_info(name: str = IndexName) -> dict:
        h = registry.get(name)
        return catalog.index_info(h.store, name)

    @app.post("/v1/indexes/{name}/search", dependencies=[caller("search")])
    async def search(body: SearchParams, request: Request, name: str = IndexName) -> Response:
        opts = SearchOptions.of(body)  # 422 before the queue
        audit_note(request, query=body.query if body.query is not None else f"like:{body.like}", method=body.method)

        def run():
            h = registry.get(name)
            result = h.engine.search(body.query, opts)
            if h.settled != h.engine._token:  # a (re)built latent table: settle it once
                h.settled = h.engine._token
                _settle_heap()
            return result

        try:
            out = await in_pool(request, run, llm=body.slow)
        except HTTPException:
            raise
        except Exception as e:  # noqa: BLE001
            err = _api_error(e)
            if err is None:
                raise
            raise HTTPException(err["status"], err["detail"]) from None
        audit_note(request, results=len(out.get("results", [])))
        # plain JSON types already: serialised directly, not FastAPI's jsonable_encoder walk over
        # ten whole documents and 100 latents (held the GIL ~1 ms per search under load)
        return Response(json_bytes(out), media_type="application/json")

    # ---------------------------------------------------------------- analyses as jobs
    def submit(request: Request, name: str, kind: str, fn, params: dict):
        key: ApiKey = request.state.api_key
        registry.get(name)  # 404 now, not in the job
        audit_note(request, query=params)

        def run():
            h = registry.get(name)
            return fn(h.store, name)

        try:
            job = jobs.submit(name, kind, key.id, params, run)
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        audit_note(request, job=job.id)
        return job

    async def wait_for(job, wait: float) -> None:
        """Long-poll without holding a thread: check the job every 50 ms for up to ``wait`` s."""
        deadline = time.monotonic() + min(wait, MAX_WAIT_S)
        while job.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def accepted(request: Request, name: str, kind: str, fn, params: dict, wait: float) -> JSONResponse:
        job = await asyncio.to_thread(submit, request, name, kind, fn, params)
        if wait > 0:
            await wait_for(job, wait)
        status = 200 if not job.active else 202
        return JSONResponse(jsonable_encoder(job.view()), status_code=status, headers={"Location": f"/v1/jobs/{job.id}"})

    Wait = Query(0.0, ge=0, le=MAX_WAIT_S, description="seconds to wait for the job to finish before answering (202 if it has not)")

    def job_route(op: Operation) -> None:
        """``POST /v1/indexes/NAME/<op.route>``: the body is checked (422) before the job is queued."""
        async def route(body, request: Request, name: str = IndexName, wait: float = Wait):
            check_filters(*op.filters(body))
            return await accepted(request, name, op.route, lambda store, n: op.run(store, n, body), body.model_dump(), wait)

        route.__annotations__["body"] = op.params  # FastAPI reads the body's model from the annotation
        route.__name__ = op.route
        app.post(f"/v1/indexes/{{name}}/{op.route}", status_code=202, dependencies=[caller(op.role)])(route)

    for op in ANALYSES:
        job_route(op)

    def own_job(job_id: str, key: ApiKey):
        job = jobs.get(job_id)
        if job is None or not (key.role == "admin" or job.owner == key.id) or not key.may_index(job.index):
            raise HTTPException(404, f"no job {job_id!r}")  # another key's job does not exist for you
        return job

    JobId = PathParam(..., pattern=r"^[0-9a-f]{32}$")

    @app.get("/v1/jobs")
    def list_jobs(key: ApiKey = caller("analyses")) -> dict:
        mine = jobs.list(None if key.role == "admin" else key.id)
        return {"jobs": [j.view(with_result=False) for j in mine if key.may_index(j.index)]}

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str = JobId, key: ApiKey = caller("analyses"), wait: float = Wait) -> dict:
        job = own_job(job_id, key)
        if wait > 0:
            await wait_for(job, wait)
        return job.view()

    @app.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str = JobId, key: ApiKey = caller("analyses")) -> dict:
        return jobs.cancel(own_job(job_id, key)).view(with_result=False)

    # ---------------------------------------------------------------- latents and documents
    @app.get("/v1/indexes/{name}/latents", dependencies=[caller("search")])
    async def latents(request: Request, name: str = IndexName, params: LatentsQuery = Query()) -> Response:
        audit_note(request, query=params.query)

        def run() -> bytes:
            h = registry.get(name)
            return json_bytes(list_latents(h.store, name, params, table=h.engine.table()))

        # on the bounded search pool (a sync route ran on any of anyio's 40 threads: eight pages of
        # 500 latents at once stalled searches 5x), answered as JSON directly (jsonable_encoder's
        # walk over 500 latents' examples held the GIL)
        return Response(await in_pool(request, run), media_type="application/json")

    @app.get("/v1/indexes/{name}/latents/{latent_id}", dependencies=[caller("search")])
    def latent(name: str = IndexName, latent_id: int = PathParam(..., ge=0, le=10_000_000)) -> dict:
        return catalog.latent_detail(registry.get(name).store, name, latent_id)

    @app.get("/v1/indexes/{name}/documents/{doc_id:path}", dependencies=[caller("search")])
    def document(name: str = IndexName, doc_id: str = PathParam(..., min_length=1, max_length=512),
                 top: int = Query(15, ge=1, le=200)) -> dict:
        return registry.get(name).engine.document(doc_id, top)

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page():
            return FileResponse(STATIC / "index.html")

    return app


def json_bytes(out: dict) -> bytes:
    """A response body from plain JSON types, without FastAPI's jsonable_encoder walk (it held the
    GIL ~1 ms per search under load), written by pydantic-core's serializer (0.07 ms for a search's
    44 KB where ``json.dumps`` took 0.39, all of it holding the GIL). A NaN or infinity is
    ``null``: the body stays valid JSON."""
    return pydantic_core.to_json(out, inf_nan_mode="null")


def _settle_heap() -> None:
    """Move what start-up and a new index handle allocated (modules, models, the latent table:
    ~500k objects) out of the garbage collector's sight: a full collection over them paused every
    thread for ~285 ms - a search's p99 jumped from 18 to 290 ms whenever one ran."""
    import gc

    gc.collect()
    gc.freeze()


def _preload_analyses() -> None:
    """Import what the analyses import lazily (scipy.stats, scikit-learn) at start-up: a first job
    importing them held the GIL for ~0.5 s, stalling every search and /healthz meanwhile."""
    import scipy.stats  # noqa: F401
    import sklearn.cluster  # noqa: F401


__all__ = ["create_app", "KeyConfigError", "public_message"]
