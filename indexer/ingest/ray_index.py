"""Index past one machine: the same pipeline as a Ray Data job over shards of the corpus.

The driver (this process) reads and validates the corpus exactly as ``saedex index`` does, decides
what to encode (content hashes against the index), and hands records to a pool of Ray actors that
each load the encoder once (reader + token SAE + concept SAE + embedder; one GPU each where the
cluster has GPUs, bf16; CPU actors otherwise). Each actor returns its encoded documents as rows of
the interchange format (what ``saedex export`` writes, recipe in the metadata); the driver writes
every returned block as a Parquet **shard** (atomically: temp file, then rename) and, when all are
in, imports the shards into the store (Edge, or a Qdrant server) and refreshes latent labels.

Why this shape:
- *Only records and Parquet rows travel.* Workers never open the store (Edge allows one process
  per store); the shards live on the driver's disk, so no shared filesystem is needed. Every
  worker machine needs saedex installed (the shipped models come with it).
- *Fault tolerance is Ray's:* Ray Data restarts a killed actor and retries its batch
  (``max_restarts=-1``, ``max_task_retries=-1``); a retried batch's rows replace nothing twice,
  because the driver keys every row by (id, content hash) and the import skips ids already in.
- *A killed driver resumes from its shards:* a new run reads the shards already written, skips
  the documents they hold (same id, content hash and dataset), encodes the rest, and imports all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from indexer.core.errors import InputError
from indexer.core.paths import saedex_home, validate_index_name
from indexer.core.progress import progress_bar
from indexer.encode.embedder import DEFAULT_EMBEDDER, get_embedder
from indexer.encode.recipe import Recipe, read_manifest
from indexer.ingest.corpus import Record
from indexer.ingest.interchange import (
    ImportReport,
    InterchangeError,
    _validate,
    points_table,
    prepare_views,
    read_recipe,
    write_rows,
)
from indexer.ingest.pipeline import Indexer, IndexReport, collect_records, finish_run, plan_records
from indexer.store import Store, open_store
from indexer.store.catalog import add_dataset
from indexer.store.columns import view_writers

try:  # an extra: `pip install saedex[ray]`
    import ray
    import ray.data
    import ray.exceptions
except ImportError:  # pragma: no cover - exercised where ray is not installed
    ray = None

WORKER_COLUMN, SECONDS_COLUMN = "_ray_worker", "_ray_encode_s"  # per-row job statistics, dropped before a shard is written
SHARD_GLOB = "shard-*.parquet"


@dataclass
class RayOptions:
    """Where and how wide the job runs. ``address``: ``local`` starts a Ray instance in this
    process (all cores); ``auto`` joins the cluster this machine belongs to; otherwise a cluster
    address (``HOST:6379``, ``ray://HOST:10001``)."""

    address: str = "local"
    workers: int | None = None  # actors (default: one per GPU, else one per cpus_per_worker CPUs)
    cpus_per_worker: int = 1  # torch threads of a CPU actor
    shard_docs: int = 64  # documents per actor call (and per shard file)
    shards_dir: Path | None = None  # kept after the job when given; default: a folder under SAEDEX_HOME, removed on success

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be >= 1 (got {self.workers})")
        if self.cpus_per_worker < 1:
            raise InputError(f"--ray-cpus-per-worker must be >= 1 (got {self.cpus_per_worker})")
        if not 1 <= self.shard_docs <= 100_000:
            raise InputError(f"--shard-docs must be in 1..100000 (got {self.shard_docs})")


@dataclass
class RayStats:
    address: str = ""
    workers: int = 0
    gpus_per_worker: int = 0
    startup_s: float = 0.0  # connect to / start Ray
    job_s: float = 0.0  # first record submitted -> last shard written
    import_s: float = 0.0
    total_s: float = 0.0  # the whole command: read, plan, job, import, labels
    shards_written: int = 0
    resumed_docs: int = 0  # found in shards of an earlier, interrupted run
    retried_rows: int = 0  # rows of a batch Ray ran twice (a worker died mid-batch), dropped
    per_worker: dict = field(default_factory=dict)  # worker -> docs, tokens, encode_s, tokens_per_s
    shards_dir: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class ShardEncoder:
    """The Ray Data actor: loads the index's encoder once, then turns a batch of records into
    interchange rows. Runs on a worker; nothing here touches the store."""

    def __init__(self, recipe: dict, dataset: str, device: str, precision: str, batch_tokens: int):
        self.recipe = Recipe.from_dict(recipe, "ray")
        self.indexer = Indexer.for_recipe(self.recipe, device=device, precision=precision, batch_tokens=batch_tokens)
        self.indexer.reader  # load now: a restarted actor is ready before its retried batch
        get_embedder(self.indexer.embedder_name)
        self.dataset = dataset
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        records = [record_from_row(s) for s in batch.column("record").to_pylist()]
        table = points_table(self.indexer.encode_records(records, self.dataset), self.recipe)
        seconds = (time.perf_counter() - t0) / max(len(records), 1)
        table = table.append_column(WORKER_COLUMN, pa.array([self.name] * table.num_rows, pa.string()))
        return table.append_column(SECONDS_COLUMN, pa.array([seconds] * table.num_rows, pa.float64()))


def record_row(r: Record) -> str:
    """A record as it travels to a worker: one JSON string (fields keep their JSON types)."""
    return json.dumps({"id": r.id, "text": r.text, "prompt": r.prompt, "fields": r.fields}, ensure_ascii=False)


def record_from_row(s: str) -> Record:
    d = json.loads(s)
    return Record(id=d["id"], text=d["text"], fields=d["fields"], prompt=d["prompt"])


def default_shards_dir(index: str) -> Path:
    return saedex_home() / "ray-shards" / validate_index_name(index)


def index_corpus_ray(path: str | Path, index: str, options: RayOptions, indexer: Indexer, dataset: str | None = None,
                     text_field: str = "text", id_field: str | None = None, skip_invalid: bool = False,
                     qdrant_url: str | None = None, update: bool = False, follow_symlinks: bool = False,
                     keep: str = "first", prompt_field: str | None = None, progress: bool = True,
                     refresh: bool = True, device: str = "auto") -> IndexReport:
    """``saedex index --ray``: the same index as :func:`index_corpus`, encoded by Ray actors.
    Returns the report, with the job's statistics under ``ray``."""
    if ray is None:
        raise InputError("--ray needs Ray: pip install 'saedex[ray]'")
    dataset = dataset or Path(path).name.split(".")[0]
    report = IndexReport(index=index, dataset=dataset)
    stats = RayStats(address=options.address)
    records = collect_records(path, text_field, id_field, skip_invalid, report, follow_symlinks, keep, prompt_field)
    report.prompts = sum(r.prompt is not None for r in records)
    shards = Path(options.shards_dir or default_shards_dir(index))
    stats.shards_dir = str(shards)
    t0 = time.time()
    with open_store(index, qdrant_url) as store:
        indexer.prepare_store(store, index, two_view=report.prompts > 0)
        add_dataset(store, dataset)
        recipe = read_manifest(store, index).recipe
        todo, new, changed = plan_records(store, records, update, report)
        wanted = {(r.id, r.content_hash) for r in todo}
        done = shard_keys(shards, recipe, dataset)
        encode = [r for r in todo if (r.id, r.content_hash) not in done]
        stats.resumed_docs = len(todo) - len(encode)
        if encode:
            _run_job(encode, dataset, recipe, options, indexer, shards, stats, report, progress, device)
        t_imp = time.time()
        _import_shards(store, shards, recipe, dataset, wanted, frozenset(r.id for r in changed) if update else frozenset(),
                       report, progress)
        stats.import_s = round(time.time() - t_imp, 2)
        finish_run(store, report, todo, new, refresh, progress)
    stats.total_s = round(time.time() - t0, 2)
    report.seconds = stats.job_s or stats.total_s  # encoding time, as the single-process report's (tokens/s)
    if options.shards_dir is None and shards.exists():
        shutil.rmtree(shards, ignore_errors=True)  # imported: the default work folder is only for resuming
    report.ray = stats.as_dict()
    return report


def shard_keys(shards: Path, recipe: Recipe, dataset: str) -> set[tuple[str, str]]:
    """(id, content hash) of every document in the shards already written for this dataset. A
    shard of another recipe is refused (it would import vectors of another model); leftover
    temp files of a killed run are removed."""
    if not shards.exists():
        return set()
    for tmp in shards.glob(".tmp-*"):
        tmp.unlink(missing_ok=True)
    keys: set[tuple[str, str]] = set()
    for f in sorted(shards.glob(SHARD_GLOB)):
        _, file_recipe = read_recipe(f)
        if file_recipe.mismatches(recipe):
            raise InputError(f"{f}: a shard of another recipe ({'; '.join(file_recipe.mismatches(recipe))}); "
                             f"remove {shards} or choose another --shards folder")
        t = pq.read_table(f, columns=["id", "dataset", "content_hash"])
        keys |= {(i, h) for i, d, h in zip(*(t.column(c).to_pylist() for c in ("id", "dataset", "content_hash"))) if d == dataset}
    return keys


def _connect(options: RayOptions) -> None:
    """Start or join Ray quietly (Ray's own progress bars and log forwarding off: ours report)."""
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if options.address == "local":
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    else:
        try:
            ray.init(address=options.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"--ray {options.address}: cannot connect to a Ray cluster ({str(e).splitlines()[0][:200]})") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its execution-plan notices: our progress bar reports
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _worker_plan(options: RayOptions, device: str) -> tuple[int, dict, str]:
    """(actors, Ray resources per actor, device): one GPU per actor where the cluster has GPUs
    (unless ``--device cpu``), else ``cpus_per_worker`` CPUs each."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus and device != "cpu":
        return options.workers or gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    cpus = int(res.get("CPU", 1))
    n = options.workers or max(1, cpus // options.cpus_per_worker)
    return n, {"num_cpus": options.cpus_per_worker}, "cpu"


def _run_job(records: list[Record], dataset: str, recipe: Recipe, options: RayOptions, indexer: Indexer, shards: Path,
             stats: RayStats, report: IndexReport, progress: bool, device: str) -> None:
    """Connect, encode, disconnect. Ray prints the cluster's notices (a worker died, a task is
    retried) on the driver's stdout: they go to stderr here, so ``--json`` output stays JSON."""
    started = not ray.is_initialized()
    with contextlib.redirect_stdout(sys.stderr):
        try:
            _encode_on_ray(records, dataset, recipe, options, indexer, shards, stats, report, progress, device)
        except ray.exceptions.RayError as e:
            raise InputError(f"the Ray job failed: {_first_line(e)} (shards written so far are kept in {shards}; "
                             f"run the command again to resume)") from None
        finally:
            if started and ray.is_initialized():
                ray.shutdown()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    causes = [ln for ln in lines if "Error" in ln and ":" in ln]
    return (causes[-1] if causes else lines[0] if lines else type(e).__name__)[:300]


def _encode_on_ray(records: list[Record], dataset: str, recipe: Recipe, options: RayOptions, indexer: Indexer, shards: Path,
                   stats: RayStats, report: IndexReport, progress: bool, device: str) -> None:
    t0 = time.time()
    _connect(options)
    n_workers, resources, worker_device = _worker_plan(options, device)
    stats.startup_s = round(time.time() - t0, 2)
    stats.workers, stats.gpus_per_worker = n_workers, resources.get("num_gpus", 0)
    shards.mkdir(parents=True, exist_ok=True)
    items = [{"record": record_row(r)} for r in records]
    blocks = max(1, math.ceil(len(items) / options.shard_docs))
    cfg = indexer.reader_cfg
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        ShardEncoder, batch_size=options.shard_docs, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n_workers),
        fn_constructor_kwargs={"recipe": recipe.to_dict(), "dataset": dataset, "device": worker_device,
                               "precision": cfg.precision, "batch_tokens": cfg.batch_tokens},
        **resources)
    bar = progress_bar(len(records), f"index {dataset} on Ray ({n_workers} workers)", progress)
    per = defaultdict(lambda: {"docs": 0, "tokens": 0, "encode_s": 0.0})
    seen: set[str] = set()
    t_job = time.time()
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        block = _drop_seen(block, seen, stats)
        if block.num_rows == 0:
            continue
        _account(block, per, report)
        write_shard(shards, block.drop_columns([WORKER_COLUMN, SECONDS_COLUMN]))
        stats.shards_written += 1
        bar.update(block.num_rows)
        if hasattr(bar, "set_postfix_str"):
            tokens = sum(w["tokens"] for w in per.values())
            bar.set_postfix_str(f"{tokens / max(time.time() - t_job, 1e-9):,.0f} tok/s; "
                                + ", ".join(f"{w.split(':')[-1]}: {v['docs']}" for w, v in sorted(per.items())), refresh=False)
    bar.close()
    stats.job_s = round(time.time() - t_job, 2)
    stats.per_worker = {w: {**v, "encode_s": round(v["encode_s"], 2),
                            "tokens_per_s": round(v["tokens"] / v["encode_s"], 1) if v["encode_s"] else None}
                        for w, v in sorted(per.items())}


def _drop_seen(block: pa.Table, seen: set[str], stats: RayStats) -> pa.Table:
    """Rows of a document already received (Ray re-ran a batch whose first result had arrived)."""
    ids = block.column("id").to_pylist()
    keep = [i for i, d in enumerate(ids) if d not in seen]
    stats.retried_rows += len(ids) - len(keep)
    seen.update(ids)
    return block if len(keep) == len(ids) else block.take(pa.array(keep, pa.int64()))


def _account(block: pa.Table, per: dict, report: IndexReport) -> None:
    """Documents, tokens (both views) and encode seconds by worker."""
    tokens = [sum(x or 0 for x in pair) for pair in zip(block.column("n_tokens").to_pylist(),
              block.column("prompt_tokens").to_pylist() if "prompt_tokens" in block.column_names else [0] * block.num_rows)]
    for w, t, s in zip(block.column(WORKER_COLUMN).to_pylist(), tokens, block.column(SECONDS_COLUMN).to_pylist()):
        per[w]["docs"] += 1
        per[w]["tokens"] += t
        per[w]["encode_s"] += s
    report.tokens += sum(tokens)


def write_shard(shards: Path, table: pa.Table) -> Path:
    """One shard, whole or not at all: written to a temp name, then renamed (a killed driver
    leaves only complete shards, which a resumed run trusts)."""
    name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = shards / f".tmp-{name}"
    pq.write_table(table, str(tmp), compression="zstd")
    os.replace(tmp, shards / name)
    return shards / name


def _import_shards(store: Store, shards: Path, recipe: Recipe, dataset: str, wanted: set[tuple[str, str]],
                   replace: frozenset[str], report: IndexReport, progress: bool) -> None:
    """Import the rows of every shard that this run wants (its documents, current content), each
    shard validated as ``saedex import`` validates a file. A document in two shards (a resumed
    run) is written once."""
    files = sorted(shards.glob(SHARD_GLOB)) if shards.exists() else []
    if not files:
        return
    embedder = get_embedder(recipe.embedder or DEFAULT_EMBEDDER)
    tables = []
    for f in files:
        pf, _ = read_recipe(f)
        _validate(pf, recipe, f, lambda n: None)
        t = pf.read()
        keys = zip(t.column("id").to_pylist(), t.column("content_hash").to_pylist(), t.column("dataset").to_pylist())
        rows = [i for i, (d, h, ds) in enumerate(keys) if (d, h) in wanted and ds == dataset]
        tables.append(t.take(pa.array(rows, pa.int64())))
    prepare_views(store, tables)
    columns = view_writers(store, replacing=bool(replace))
    counts = ImportReport(index=store.name)
    written: set[str] = set()
    bar = progress_bar(sum(t.num_rows for t in tables), "import shards", progress)
    for t in tables:
        ids = t.column("id").to_pylist()
        fresh = [i for i, d in enumerate(ids) if d not in written]
        written.update(ids)
        if fresh:
            write_rows(store, t.take(pa.array(fresh, pa.int64())), embedder, columns, counts, replace=replace)
        bar.update(t.num_rows)
    bar.close()
    if len(written) != len(wanted):
        missing = len(wanted) - len(written)
        raise InterchangeError(f"{missing} document(s) of this run are in no shard of {shards}; run the command again")
