"""FastAPI service over search and analyses. Thin routes: the logic lives in the libraries.

Security and robustness, because this serves compliance reviews:
- ``Authorization: Bearer KEY`` with keys from ``SAEDEX_API_KEYS`` (comma-separated); 401 otherwise.
- Index names are validated against ``[A-Za-z0-9_-]{1,64}`` (no path traversal); unknown -> 404.
- k, query length and request bodies are capped; validation errors are 422 naming the field.
- Every request is logged with its latency; no stack trace ever reaches a client (500 says only
  "internal error" and a request id that is in the log).
- Models load once at start; each index's store is opened once and guarded by a lock, so
  concurrent requests are safe (Qdrant Edge allows one handle per process anyway).
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from indexer.store import IndexNotFound, StoreError
from indexer.catalog import LatentStatsStale
from indexer.manifest import OutdatedIndex

log = logging.getLogger("saedex.server")
STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
NAME = r"^[A-Za-z0-9_-]{1,64}$"
FilterValue = str | int | float | bool


class StrictBody(BaseModel):
    """Unknown fields are errors (422 naming them), not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SlicedBody(StrictBody):
    """An analysis over the documents matching ``where``."""

    where: dict[str, FilterValue] = Field(default_factory=dict, max_length=16)


class SearchBody(StrictBody):
    query: Optional[str] = Field(None, max_length=2000)
    k: int = Field(10, ge=1, le=10_000)
    method: Literal["sae", "bm25", "dense", "hybrid"] = "sae"
    where: dict[str, FilterValue] = Field(default_factory=dict, max_length=16)
    rerank: bool = False
    like: Optional[str] = Field(None, max_length=512)
    temperature: float = Field(0.2, gt=0, le=100)
    expand: int = Field(0, ge=0, le=20)


class DiffBody(StrictBody):
    a: dict[str, FilterValue] = Field(..., min_length=1, max_length=16)
    b: dict[str, FilterValue] | list[dict[str, FilterValue]] = Field(...)
    top: int = Field(20, ge=1, le=1000)
    threshold: float = Field(0.0, ge=0)
    floor: float = Field(0.5, ge=0, le=10)
    min_coverage: float = Field(0.005, ge=0, le=1)
    max_coverage: float = Field(0.95, ge=0, le=1)
    hypotheses: int = Field(0, ge=0, le=10)


class CorrelationsBody(SlicedBody):
    min_npmi: float = Field(0.3, ge=-1, le=1)
    max_label_sim: float = Field(0.2, ge=-1, le=1)
    min_support: int = Field(5, ge=1)
    max_freq: float = Field(0.5, gt=0, le=1)
    per_doc: int = Field(512, ge=0, le=4096)
    floor: float = Field(0.5, ge=0, le=10)
    top: int = Field(20, ge=1, le=1000)


class ClustersBody(SlicedBody):
    k: int = Field(5, ge=2, le=100)
    axis: Optional[str] = Field(None, max_length=500)
    method: Literal["sae", "dense"] = "sae"
    label_field: Optional[str] = Field(None, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class IndexHandle:
    """One open store + search engine per index, shared by all requests.

    Reads (search, latents, documents) run concurrently; analyses take ``lock`` so that at most
    one memory-heavy scan per index runs at a time.
    """

    def __init__(self, name: str, qdrant_url: str | None):
        from indexer.store import open_store
        from search.engine import SearchEngine

        self.store = open_store(name, qdrant_url)
        try:
            self.engine = SearchEngine(self.store, name)
        except Exception:
            self.store.close()
            raise
        self.lock = threading.Lock()


class Registry:
    def __init__(self, qdrant_url: str | None):
        self.qdrant_url = qdrant_url
        self.handles: dict[str, IndexHandle] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> IndexHandle:
        with self.lock:
            h = self.handles.get(name)
            if h is None:
                from indexer.store import list_indexes

                if name not in list_indexes(self.qdrant_url):
                    raise HTTPException(404, f"no index named {name!r}")
                h = self.handles[name] = IndexHandle(name, self.qdrant_url)
            return h

    def close(self) -> None:
        with self.lock:
            for h in self.handles.values():
                h.store.close()
            self.handles.clear()


def _filter(d: dict) -> Any:
    from search.filters import FilterError, filter_from_dict

    try:
        return filter_from_dict(d)
    except FilterError as e:
        raise HTTPException(422, str(e)) from None


def create_app(qdrant_url: str | None = None, api_keys: list[str] | None = None, preload: bool = True) -> FastAPI:
    keys = api_keys if api_keys is not None else [k.strip() for k in os.environ.get("SAEDEX_API_KEYS", "").split(",") if k.strip()]
    registry = Registry(qdrant_url or os.environ.get("SAEDEX_QDRANT_URL"))
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        registry.close()  # flush and release the Qdrant Edge locks

    app = FastAPI(title="saedex", version="0.1.0", lifespan=lifespan,
                  description="Interpretable SAE search and analyses over text collections.")
    app.state.registry = registry
    if preload:
        from indexer.embedder import get_embedder

        get_embedder()  # models load once, at start

    def auth(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not token or not any(hmac.compare_digest(token, k) for k in keys):
            raise HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            resp = JSONResponse({"detail": f"request body too large (max {MAX_BODY} bytes)"}, status_code=413)
        else:
            try:
                resp = await call_next(request)
            except Exception:  # noqa: BLE001 - never leak a trace
                log.exception("request %s failed", rid)
                resp = JSONResponse({"detail": "internal error", "request_id": rid}, status_code=500)
        resp.headers["X-Request-Id"] = rid
        log.info("%s %s %s %d %.1fms", rid, request.method, request.url.path, resp.status_code, (time.perf_counter() - t0) * 1000)
        return resp

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = [{"field": ".".join(str(p) for p in e.get("loc", []) if p != "body"), "message": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errs}, status_code=422)

    @app.exception_handler(IndexNotFound)
    async def not_found(request: Request, exc: IndexNotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LatentStatsStale)
    async def _stale(request: Request, exc: LatentStatsStale):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(OutdatedIndex)
    async def _outdated(request: Request, exc: OutdatedIndex):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    IndexName = PathParam(..., pattern=NAME, description="index name")
    protected = [Depends(auth)]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/v1/indexes", dependencies=protected)
    def indexes() -> dict:
        from indexer.store import list_indexes

        return {"indexes": list_indexes(registry.qdrant_url)}

    @app.get("/v1/indexes/{name}", dependencies=protected)
    def index_info(name: str = IndexName) -> dict:
        from indexer.catalog import index_info as info

        h = registry.get(name)
        return info(h.store, name)

    @app.post("/v1/indexes/{name}/search", dependencies=protected)
    def search(body: SearchBody, name: str = IndexName) -> dict:
        from indexer.llm import LLMNotConfigured
        from search.engine import SearchError, SearchOptions

        h = registry.get(name)
        opts = SearchOptions(k=body.k, method=body.method, where=_filter(body.where), rerank=body.rerank, like=body.like,
                             temperature=body.temperature, expand=body.expand)
        try:  # Qdrant Edge reads are thread-safe; searches run concurrently
            return h.engine.search(body.query, opts)
        except (SearchError, LLMNotConfigured) as e:
            raise HTTPException(422, str(e)) from None

    def _analysis(fn, name: str, **kw) -> dict:
        from analyses.matrix import AnalysisError
        from indexer.llm import LLMNotConfigured

        h = registry.get(name)
        try:
            with h.lock:
                return fn(h.store, name, **kw)
        except (AnalysisError, LLMNotConfigured) as e:
            raise HTTPException(422, str(e)) from None

    @app.post("/v1/indexes/{name}/diff", dependencies=protected)
    def diff(body: DiffBody, name: str = IndexName) -> dict:
        from analyses.diff import diff as run

        b = [_filter(x) for x in body.b] if isinstance(body.b, list) else _filter(body.b)
        if isinstance(b, list) and not b:
            raise HTTPException(422, "b: give at least one filter")
        return _analysis(run, name, a=_filter(body.a), b=b, top=body.top, threshold=body.threshold,
                         min_coverage=body.min_coverage, max_coverage=body.max_coverage, hypotheses=body.hypotheses,
                         floor=body.floor)

    @app.post("/v1/indexes/{name}/correlations", dependencies=protected)
    def correlations(body: CorrelationsBody, name: str = IndexName) -> dict:
        from analyses.correlations import correlations as run

        return _analysis(run, name, where=_filter(body.where), min_npmi=body.min_npmi, max_label_sim=body.max_label_sim,
                         min_support=body.min_support, top=body.top, max_freq=body.max_freq, per_doc=body.per_doc,
                         floor=body.floor)

    @app.post("/v1/indexes/{name}/clusters", dependencies=protected)
    def clusters(body: ClustersBody, name: str = IndexName) -> dict:
        from analyses.clustering import cluster as run

        return _analysis(run, name, where=_filter(body.where), k=body.k, axis=body.axis, method=body.method,
                         label_field=body.label_field)

    @app.get("/v1/indexes/{name}/latents", dependencies=protected)
    def latents(name: str = IndexName, query: Optional[str] = Query(None, max_length=500),
                top: int = Query(20, ge=1, le=1000)) -> dict:
        from indexer.catalog import latent_summary, latents_for_query, top_latents_by_freq

        h = registry.get(name)
        if query and query.strip():
            ranked = latents_for_query(h.store, query, top)
            pts = {p.latent: p for p in h.store.get_latents([i for i, _ in ranked])}
            return {"latents": [latent_summary(pts[i]) | {"similarity": round(s, 4)} for i, s in ranked if i in pts]}
        return {"latents": [latent_summary(p) for p in top_latents_by_freq(h.store, top)]}

    @app.get("/v1/indexes/{name}/latents/{latent_id}", dependencies=protected)
    def latent(name: str = IndexName, latent_id: int = PathParam(..., ge=0, le=10_000_000)) -> dict:
        from indexer.catalog import latent_summary

        h = registry.get(name)
        pts = h.store.get_latents([latent_id])
        if not pts:
            raise HTTPException(404, f"no latent {latent_id} in index {name!r}")
        p = pts[0]
        return latent_summary(p, n_examples=20) | {"negatives": p.payload.get("negatives", []),
                                                   "label_source": p.payload.get("label_source", "offline")}

    @app.get("/v1/indexes/{name}/documents/{doc_id:path}", dependencies=protected)
    def document(name: str = IndexName, doc_id: str = PathParam(..., min_length=1, max_length=512), top: int = Query(15, ge=1, le=200)) -> dict:
        from indexer.pooling import fire_spans
        from search.engine import HIDDEN_PAYLOAD

        h = registry.get(name)
        docs = h.store.get_docs([doc_id], with_sparse=True)
        if not docs:
            raise HTTPException(404, f"no document {doc_id!r} in index {name!r}")
        d = docs[0]
        sparse = d.sparse or {}
        meta = h.engine.latent_meta(list(sparse))
        ranked = sorted(((i, a, a / meta[i]["p90"]) for i, a in sparse.items() if i in meta and meta[i]["p90"] > 0), key=lambda t: -t[2])[:top]
        spans = fire_spans(d.payload, [i for i, _, _ in ranked])
        return {"id": d.doc_id, "text": d.payload.get("text", ""), "dataset": d.payload.get("dataset"),
                "fields": {k: v for k, v in d.payload.items() if k not in HIDDEN_PAYLOAD},
                "latents": [{"latent": i, "label": meta[i]["label"], "activation": round(a, 4), "relative": round(r, 3),
                             "spans": [spans[i]] if i in spans else []} for i, a, r in ranked]}

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page():
            return FileResponse(STATIC / "index.html")

    return app
