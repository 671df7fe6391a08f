"""`saedex` commands owned by the indexer: index, info, latents, label, train-sae, build-dictionary, drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from indexer.core.cli import JsonOpt, UrlOpt, console, emit, err_console, friendly_errors
from indexer.core.errors import InputError
from indexer.core.filters import parse_where
from indexer.encode.embedder import DEFAULT_EMBEDDER, get_embedder, same_embedder, unit_embedder
from indexer.encode.reader import Reader, ReaderConfig, set_threads
from indexer.encode.sae import DEFAULT_SAE_DIR, load_sae
from indexer.ingest.corpus import read_corpus
from indexer.ingest.interchange import export_parquet, import_parquet
from indexer.ingest.pipeline import Indexer, index_corpus
from indexer.ingest.ray_index import RayOptions, index_corpus_ray
from indexer.labels.concept_labels import build_concept_dictionary
from indexer.labels.dictionary.build import build_dictionary
from indexer.labels.dictionary.store import save_dictionary
from indexer.labels.dictionary.vocabulary import load_vocabulary
from indexer.labels.llm import label_with_llm
from indexer.labels.refresh import refresh_latents
from indexer.store import list_indexes, open_store
from indexer.store.catalog import index_info, require_index
from indexer.train.activation_cache import cache_activations
from indexer.train.trainer import TrainConfig, train_sae
from indexer.train.unit_cache import balanced_units, cache_unit_embeddings


@friendly_errors
def index_cmd(
    path: Path = typer.Argument(..., help="JSONL, JSONL.gz, CSV, Parquet file or a folder of .txt files."),
    index: str = typer.Option(..., "--index", help="Index name ([A-Za-z0-9_-])."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name stored with every document (default: file name)."),
    text_field: str = typer.Option("text", "--text-field", help="Field with the text (with --prompt-field: the response)."),
    prompt_field: Optional[str] = typer.Option(None, "--prompt-field", help="Field with the prompt a text answers: such "
                                               "records get two views (prompt, response); records without it stay single-view."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Field with document ids (default: content hash)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip and count broken records instead of failing."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="In a folder, follow symlinks that point outside it."),
    keep: str = typer.Option("first", "--keep", help="An id repeated in the file: index its first or its last copy "
                                                     "(copies that differ are reported)."),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE folder (sae-lens format) or release:sae_id; default: shipped SAE."),
    concept: str = typer.Option("default", "--concept", help="Concept-family SAE: default (shipped, MiniLM), matryoshka (shipped, "
                                "MiniLM, Matryoshka prefixes), mpnet (shipped; make mpnet first), none, or a folder (README: the opt-in mpnet concept family)."),
    reader: Optional[str] = typer.Option(None, "--reader", help="Reader model id/path (default: gemma3-270m)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Residual stream after this block (default: the SAE's layer, 6)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Read documents up to this many tokens (default 4,096; longer ones are cut and counted)."),
    window: Optional[int] = typer.Option(None, "--window", help="Tokens per reader window (default 1,024; see README)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tokens of left context a window shares with the previous one (default 128)."),
    precision: str = typer.Option("auto", "--precision", envvar="SAEDEX_PRECISION", help="auto | fp32 | bf16 (auto: bf16 on GPUs and CPUs with native bf16, else fp32)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    batch_tokens: int = typer.Option(4096, "--batch-tokens", help="Tokens per forward pass."),
    update: bool = typer.Option(False, "--update", help="Re-index documents whose id is indexed with a different text."),
    chunk_docs: int = typer.Option(128, "--chunk-docs", help="Documents per write (one atomic upsert each)."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help="Encode on a Ray cluster: local (start one here), auto "
                                              "(this machine's cluster) or its address (HOST:6379, ray://HOST:10001). See README."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Encoder actors (default: one per GPU, else one per "
                                              "--ray-cpus-per-worker CPUs of the cluster)."),
    ray_cpus: int = typer.Option(1, "--ray-cpus-per-worker", help="CPUs (torch threads) per CPU actor."),
    shard_docs: int = typer.Option(64, "--shard-docs", help="With --ray: documents per actor call and per Parquet shard."),
    shards: Optional[Path] = typer.Option(None, "--shards", help="With --ray: keep the Parquet shards in this folder "
                                          "(default: a folder under SAEDEX_HOME, removed once imported)."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
):
    """Index a corpus: reader LM -> SAE -> max-pool -> Qdrant, then refresh latent stats and labels."""
    indexer = Indexer.from_options(sae, precision=precision, device=device, batch_tokens=batch_tokens, concept=concept, model=reader,
                                   layer=layer, max_tokens=max_tokens, window=window, overlap=overlap)
    if ray_address is None:
        report = index_corpus(path, index, dataset, text_field, id_field, skip_invalid, qdrant_url,
                              indexer=indexer, chunk_docs=chunk_docs, progress=not quiet, update=update,
                              follow_symlinks=follow_symlinks, keep=keep, prompt_field=prompt_field)
    else:
        options = RayOptions(address=ray_address, workers=ray_workers, cpus_per_worker=ray_cpus, shard_docs=shard_docs,
                             shards_dir=shards)
        report = index_corpus_ray(path, index, options, indexer, dataset, text_field, id_field, skip_invalid, qdrant_url,
                                  update=update, follow_symlinks=follow_symlinks, keep=keep, prompt_field=prompt_field,
                                  progress=not quiet, device=device)
    d = report.as_dict()
    if report.duplicates_conflicting:
        err_console.print(f"warning: {report.duplicates_conflicting} of {report.duplicates_in_input} repeated id(s) had a "
                          f"different text or fields; kept the {keep} copy of each, e.g.:", highlight=False)
        for line in report.duplicate_examples:
            err_console.print(f"  {line}", highlight=False, markup=False)
    if report.invalid:
        err_console.print(f"skipped {report.invalid} invalid record(s), e.g. {report.invalid_examples[0]}", highlight=False)
    if report.ids_normalised:
        err_console.print(f"warning: {report.ids_normalised} integer id(s) stored as strings (ids 1 and \"1\" are the same document)",
                          highlight=False)
    if report.changed and not update:
        err_console.print(f"warning: {report.changed} document(s) already indexed under the same id have a different text; "
                          f"kept the indexed version (re-run with --update to replace them)", highlight=False)
    emit(d, as_json, lambda r: console.print(
        f"indexed {r['indexed']} new document(s) into [bold]{index}[/bold] "
        f"({_with_prompts(r['prompts'])}{r['already_indexed']} already there, {r['empty']} empty, {r['invalid']} invalid, "
        f"{r['duplicates_in_input']} duplicate ids, {r['changed']} changed, {r['updated']} updated; "
        f"{r['tokens']} tokens, {r['truncated_docs']} truncated, "
        f"{r['tokens_per_s']} tok/s; {r['latents_relabelled']} latents (re)labelled)" + _ray_summary(r.get("ray")),
        highlight=False))


def _ray_summary(ray: dict | None) -> str:
    if not ray:
        return ""
    workers = "; ".join(f"{w}: {v['docs']} docs, {v['tokens_per_s']} tok/s" for w, v in ray["per_worker"].items())
    return (f"\non Ray ({ray['address']}): {ray['workers']} worker(s), {ray['shards_written']} shard(s) written, "
            f"{ray['resumed_docs']} document(s) resumed from earlier shards; start-up {ray['startup_s']} s, job {ray['job_s']} s, "
            f"import {ray['import_s']} s" + (f"\n  {workers}" if workers else ""))


def _with_prompts(n: int) -> str:
    return f"{n} with a prompt, " if n else ""


@friendly_errors
def info_cmd(index: str = typer.Option(..., "--index"), qdrant_url: Optional[str] = UrlOpt, as_json: bool = JsonOpt):
    """Documents per dataset and the recipe (reader, layer, SAE) of an index."""
    with open_store(index, qdrant_url) as store:
        info = index_info(store, index)
    emit(info, as_json, lambda i: console.print_json(data=i))


@friendly_errors
def label_cmd(
    index: str = typer.Option(..., "--index"),
    llm: Optional[str] = typer.Option(None, "--llm", help="Label with this model on an OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated latent ids to label (default: all that fire)."),
    min_docs: int = typer.Option(3, "--min-docs", help="Skip latents firing in fewer documents (LLM only)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, max=64,
                                              help="Parallel LLM requests (default 2 for a server on this machine, 8 remote; SAEDEX_LLM_CONCURRENCY)."),
    own_data: bool = typer.Option(False, "--own-data", help="Label from this index's own examples (offline labeller) instead of the SAE's dictionary."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """(Re)label latents: from the SAE's concept dictionary (default), the index's own data, or an LLM."""
    with open_store(index, qdrant_url) as store:
        require_index(store, index)
        if llm is None:
            n = refresh_latents(store, progress=not as_json, own_labels=own_data)
            result = {"relabelled": n, "labeller": "offline" if own_data else "dictionary (offline for latents it lacks)"}
        else:
            ids = list(_int_list(only, "--only")) or None
            result = label_with_llm(store, llm, ids=ids, min_docs=min_docs, concurrency=concurrency, progress=not as_json)
    emit(result, as_json, lambda r: console.print_json(data=r))


# Per family: (width, k, lr, batch, dead after N rows) - the token SAE's shipped recipe; the concept
# family's from HypotheSAEs (Adam 5e-4, batch 512; M/K 1024/8 at ~100k texts) and our pilot (2,048/8).
FAMILY_DEFAULTS = {"token": (16384, 32, 4e-4, 2048, 1_000_000), "concept": (2048, 8, 5e-4, 512, 100_000)}


@friendly_errors
def train_sae_cmd(
    corpus: Path = typer.Argument(..., help="Training text (JSONL/JSONL.gz/CSV/Parquet/.txt folder)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the SAE (sae-lens format) and report.json."),
    family: str = typer.Option("token", "--family", help="token: on the reader's hidden states; concept: on sentence embeddings (no reader)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Activation cache (default: OUT/activations)."),
    reader: str = typer.Option("gemma3-270m", "--reader"),
    layer: int = typer.Option(6, "--layer"),
    max_tokens: int = typer.Option(128, "--max-tokens", help="Per-document token limit."),
    precision: str = typer.Option("fp32", "--precision", help="Reader precision for the activation cache (fp32 reproduces the shipped SAE)."),
    tokens: int = typer.Option(3_000_000, "--tokens", help="Training tokens to cache (token family)."),
    units: int = typer.Option(200_000, "--units", help="Distinct sentence units to embed, balanced over --source-field (concept family)."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, "--embedder", help="Sentence-transformers model of the units (concept family)."),
    source_field: str = typer.Option("source", "--source-field", help="Field naming each document's source, for a balanced mix (concept family)."),
    holdout_docs: int = typer.Option(1000, "--holdout-docs", help="Last N documents (token) or units (concept) held back for the report."),
    width: Optional[int] = typer.Option(None, "--width", help="Number of latents (d_sae); default 16,384 (token) or 2,048 (concept)."),
    k: Optional[int] = typer.Option(None, "--k", help="Active latents per token or unit (TopK); default 32 (token) or 8 (concept)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Default 4e-4 (token) or 5e-4 (concept)."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Rows per step; default 2,048 (token) or 512 (concept)."),
    prefixes: Optional[str] = typer.Option(None, "--prefixes", help="Matryoshka prefix widths, comma-separated (e.g. 128,512): "
                                           "the first latents must reconstruct alone, so they learn broad directions."),
    max_steps: int = typer.Option(100_000, "--max-steps"),
    max_minutes: float = typer.Option(70.0, "--max-minutes", help="Wall-clock budget for training; the LR schedule is fitted to it."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda: where the reader caches activations and the SAE trains."),
    text_field: str = typer.Option("text", "--text-field"),
    as_json: bool = JsonOpt,
):
    """Train a TopK SAE (resumable; re-run to continue): on cached reader activations (token
    family) or on sentence embeddings of the corpus's units (concept family)."""
    if family not in FAMILY_DEFAULTS:
        raise InputError(f"--family must be one of {', '.join(FAMILY_DEFAULTS)} (got {family!r})")
    set_threads()
    d_width, d_k, d_lr, d_batch, dead_rows = FAMILY_DEFAULTS[family]
    cache = cache_dir or out / ("activations" if family == "token" else "units")
    log = (lambda m: err_console.print(m, highlight=False))
    prog_path = cache / "progress.json"
    cached = prog_path.exists() and json.loads(prog_path.read_text()).get("done")
    if family == "token":
        if not cached:
            rcfg = ReaderConfig(model=reader, layer=layer, max_tokens=max_tokens, precision=precision, device=device)
            texts = [r.text for r in read_corpus(corpus, text_field=text_field, skip_invalid=True)]
            cache_activations(texts, cache, Reader(rcfg), tokens, holdout_docs=holdout_docs, log=log)
        meta = {"model_name": reader, "hook_name": f"blocks.{layer - 1}.hook_resid_post", "context_size": max_tokens,
                "saedex_reader": reader, "saedex_layer": layer, "training_corpus": str(corpus)}
    else:
        if not cached:
            docs = ((r.text, str(r.fields.get(source_field, ""))) for r in read_corpus(corpus, text_field=text_field, skip_invalid=True))
            unit_texts, per_source = balanced_units(docs, units + holdout_docs)
            log(f"{len(unit_texts):,} distinct units: " + ", ".join(f"{s or '?'} {n:,}" for s, n in sorted(per_source.items())))
            cache_unit_embeddings(unit_texts, cache, get_embedder(embedder), holdout_units=holdout_docs, log=log)
        meta = {"model_name": embedder, "saedex_family": "concept", "saedex_embedder": embedder, "saedex_units": "sentence",
                "training_corpus": str(corpus)}
    tcfg = TrainConfig(d_sae=width or d_width, k=k or d_k, lr=lr or d_lr, batch_tokens=batch_tokens or d_batch, max_steps=max_steps,
                       max_minutes=max_minutes, device=device, dead_tokens=dead_rows, prefixes=_int_list(prefixes, "--prefixes"))
    report = train_sae(cache, out, tcfg, meta, log=log)
    emit({k_: v for k_, v in report.items() if k_ != "history"}, as_json, lambda r: console.print_json(data=r))


def _int_list(text: str | None, option: str) -> tuple[int, ...]:
    """"128,512" -> (128, 512); a one-line error naming the option otherwise."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{option}: comma-separated integers expected (got {text!r})") from None


@friendly_errors
def build_dictionary_cmd(
    corpus: Path = typer.Argument(..., help="Text to read (JSONL/JSONL.gz with a 'text' field): the SAE's training corpus."),
    sae: Path = typer.Option(DEFAULT_SAE_DIR, "--sae", help="SAE folder; the dictionary is written beside its weights."),
    work: Path = typer.Option(Path("dictionary_work"), "--work", help="Folder for resumable intermediate state."),
    docs: int = typer.Option(12000, "--docs", help="Documents to read."),
    per_latent: int = typer.Option(16, "--per-latent", help="Activating contexts kept per latent (half choose the label, half score it)."),
    as_json: bool = JsonOpt,
):
    """Build the SAE's concept dictionary: directions, labels, quality scores (resumable; re-run to continue).
    For a concept-family SAE, CORPUS is its training units (the `units` folder `train-sae --family concept` wrote)."""
    if not corpus.exists():
        raise typer.BadParameter(f"{corpus}: no such file")
    loaded = load_sae(sae)
    if loaded.cfg.metadata.get("saedex_family") == "concept":
        unit_emb = unit_embedder(loaded)
        # labels are chosen in the units' space; queries meet label vectors in the index embedder's
        text_emb = None if same_embedder(unit_emb, DEFAULT_EMBEDDER) else get_embedder()
        d = build_concept_dictionary(loaded, corpus, load_vocabulary(), get_embedder(unit_emb), progress=not as_json, text_emb=text_emb)
        save_dictionary(sae, d, loaded)
        res = d["build"]
    else:
        res = build_dictionary(corpus, sae, work, max_docs=docs, per_latent=per_latent)
    emit(res, as_json, lambda r: console.print_json(data=r))


@friendly_errors
def drop_cmd(index: str = typer.Option(..., "--index"), qdrant_url: Optional[str] = UrlOpt, as_json: bool = JsonOpt):
    """Delete an index and everything in it."""
    with open_store(index, qdrant_url) as store:
        existed = store.read_manifest() is not None
        store.drop()  # refuses (exit 1) while another process (indexer, server) has the index open
    emit({"dropped": index, "existed": existed}, as_json, lambda r: console.print(f"dropped {index}" if existed else f"no index {index}"))


@friendly_errors
def indexes_cmd(qdrant_url: Optional[str] = UrlOpt, as_json: bool = JsonOpt):
    """List indexes."""
    emit({"indexes": list_indexes(qdrant_url)}, as_json, lambda r: console.print("\n".join(r["indexes"]) or "(none)"))


@friendly_errors
def export_cmd(
    index: str = typer.Option(..., "--index"),
    parquet: Path = typer.Option(..., "--parquet", help="Output file: one row per document (id, dataset, text, latents, values, payload fields)."),
    where: Optional[List[str]] = typer.Option(None, "--where", help="FIELD=VALUE; repeat to AND."),
    dense: bool = typer.Option(False, "--dense", help="Also write the dense baseline vectors."),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Export an index's pooled vectors to Parquet (the recipe rides in the file's metadata)."""
    flt = parse_where(where)
    with open_store(index, qdrant_url) as store:
        out = export_parquet(store, require_index(store, index), parquet, flt, dense, progress=not as_json)
    emit(out, as_json, lambda o: console.print(f"exported {o['documents']:,} documents to {o['path']}"))


@friendly_errors
def import_cmd(
    path: Path = typer.Argument(..., help="A Parquet file written by `saedex export` (or of that shape), or a folder of them (e.g. the shards of `index --ray --shards DIR`)."),
    index: str = typer.Option(..., "--index"),
    qdrant_url: Optional[str] = UrlOpt,
    as_json: bool = JsonOpt,
):
    """Load pooled vectors from Parquet into an index (created from the file's recipe if new)."""
    rep = import_parquet(path, index, qdrant_url, progress=not as_json)
    emit(rep.as_dict(), as_json, lambda o: console.print(
        f"imported {o['indexed']:,} of {o['read']:,} documents into {index} ({o['already_indexed']:,} already there, "
        f"{o['dense_computed']:,} dense vectors computed)"))


# The commands this layer adds to `saedex` (composed in server/cli.py), in the order `--help` lists them.
COMMANDS = {
    "index": index_cmd,
    "info": info_cmd,
    "label": label_cmd,
    "train-sae": train_sae_cmd,
    "build-dictionary": build_dictionary_cmd,
    "drop": drop_cmd,
    "indexes": indexes_cmd,
    "export": export_cmd,
    "import": import_cmd,
}
