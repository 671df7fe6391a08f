"""`saedex build-dictionary`: the resumable build of an SAE's concept dictionary.

Stages (each skipped when its output exists, so a killed build resumes where it stopped):
1. ``collect.pkl``   - contexts per latent from the corpus (see :mod:`indexer.labels.dictionary.collect`)
2. ``contexts.npy``  - MiniLM embeddings of every kept context and of the background pool
3. ``concepts.npy``  - embeddings of the concept vocabulary
4. the dictionary     - directions, labels, quality scores (see :mod:`indexer.labels.dictionary.labelling`),
                        written beside the SAE as ``dictionary.json`` + ``dictionary.npz``
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from indexer.encode.embedder import get_embedder
from indexer.encode.encoder import Encoder
from indexer.labels.dictionary.collect import collect
from indexer.labels.dictionary.labelling import label_all
from indexer.labels.dictionary.store import save_dictionary
from indexer.labels.dictionary.vocabulary import load_vocabulary


def build_dictionary(corpus: Path, sae_dir: Path, work: Path, max_docs: int, per_latent: int = 16,
                     n_background: int = 4000, vocabulary: list | None = None, progress: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    timings = json.loads((work / "timings.json").read_text()) if (work / "timings.json").exists() else {}

    def done(stage: str, t0: float) -> None:
        timings[stage] = round(timings.get(stage, 0.0) + time.time() - t0, 1)
        (work / "timings.json").write_text(json.dumps(timings, indent=1))
        if progress:
            print(f"{stage}: {timings[stage]:.0f} s", file=sys.stderr, flush=True)

    t0 = time.time()
    ix = Encoder.from_options(str(sae_dir))
    state_path = work / "collect.pkl"
    state = pickle.loads(state_path.read_bytes()) if state_path.exists() else None
    # (read the instance's own attributes: a dataclass default would answer for an older pickle)
    seen = vars(state) if state is not None else {}
    if state is None or not seen.get("complete", state.docs_read >= max_docs) or (
            state.docs_read < max_docs and not seen.get("corpus_ended", False)):
        before = state.docs_read if state is not None else -1
        state = collect(ix, corpus, state_path, max_docs=max_docs, per_latent=per_latent, n_background=n_background)
        done("collect", t0)
        if state.docs_read != before:  # new contexts: the embeddings of the old ones are stale
            import shutil

            (work / "contexts.npy").unlink(missing_ok=True)
            shutil.rmtree(work / "contexts_parts", ignore_errors=True)

    emb = get_embedder()
    ctx_ids = sorted(state.contexts)
    ctx_path = work / "contexts.npy"
    if not ctx_path.exists():
        t0 = time.time()
        texts = [state.contexts[c][0] for c in ctx_ids] + [w for w, _ in state.background]
        vecs = _embed_resumable(emb, texts, work / "contexts_parts")
        np.save(ctx_path, vecs.astype(np.float16))
        done("embed_contexts", t0)
    vecs = np.load(ctx_path).astype(np.float32)

    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    con_path = work / "concepts.npy"
    if not con_path.exists():
        t0 = time.time()
        np.save(con_path, emb.encode([c.text for c in vocab], batch_size=128).astype(np.float16))
        done("embed_concepts", t0)
    con = np.load(con_path).astype(np.float32)

    t0 = time.time()
    row_of = {c: r for r, c in enumerate(ctx_ids)}
    n_ctx = len(ctx_ids)
    dictionary = label_all(state, row_of, vecs[:n_ctx], vecs[n_ctx:], vocab, con, ix, emb)
    dictionary["build"] = {"corpus": str(corpus), "documents": state.docs_read, "tokens": state.tokens_read,
                           "contexts_per_latent": per_latent, "background_contexts": len(state.background),
                           "vocabulary": len(vocab), "seconds": timings}
    done("label", t0)
    dictionary["build"]["seconds"] = timings
    save_dictionary(sae_dir, dictionary, ix.sae)
    return dictionary["build"]


def _embed_resumable(emb, texts: list[str], parts: Path, chunk: int = 20000) -> np.ndarray:
    """Embed in chunks saved as they finish (MiniLM over ~400k contexts takes a while)."""
    parts.mkdir(exist_ok=True)
    out = []
    for s in range(0, len(texts), chunk):
        p = parts / f"{s:09d}.npy"
        if not p.exists():
            np.save(p, emb.encode(texts[s : s + chunk], batch_size=128).astype(np.float16))
            print(f"embedded {min(s + chunk, len(texts)):,}/{len(texts):,} contexts", file=sys.stderr, flush=True)
        out.append(np.load(p))
    return np.concatenate(out) if out else np.zeros((0, emb.dim), np.float16)
