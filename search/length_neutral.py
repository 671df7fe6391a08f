"""Length-neutral SAE ranking (``--length-neutral``): how much more of the query's latents a
document has than documents of its length have.

Why: a document's vector is a max over its tokens and sentences, so a longer text reaches higher
activations on any latent that fires somewhere in it. A query's latents include generic ones
(``token "as"``, ``token "-"``), and their sum ranks long texts first: on the dev index, "enthusiastic
praise" over Rotten Tomatoes ranked 17 plot synopses (600-6,600 characters) in its top 20 above
the one-line reviews it asks for. Here each document's score is its plain SAE score minus the mean
score of the index's documents in its length stratum (the same query weights over each latent's
mean activation in that stratum), so a document ranks high for having the latents *beyond what
its length gives it*.

It is an option, not the default: where length is the property (a plot synopsis is long; witty
and interesting conversations are longer), removing it costs more than it gains. Measured on all
17 dev queries (``benchmarks/length_neutral.py``, README): the two sentiment queries gain, the
length-borne ones lose, MAP falls.

Exact over the whole filtered slice: it ranks from the columnar copy (one sparse product per
shard), not from a Qdrant top list, because the short documents it lifts are the ones a
length-biased top list leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from indexer.store import Filter
from indexer.store.columns import ColumnCopy, bucket_strata, column_lengths, length_bucket, row_mask

STRATA = 10  # length strata of the index (equal shares of its documents)
BLOCK = 4096  # rows read at a time: a whole shard of long documents is hundreds of millions of non-zeros


def _blocks(rows: np.ndarray) -> list[np.ndarray]:
    return np.array_split(rows, max(1, -(-len(rows) // BLOCK))) if len(rows) else []


@dataclass(frozen=True)
class LengthBaseline:
    """Each latent's mean activation over the index's documents of each length stratum.

    ``stratum_of_bucket`` maps the copy's fixed length buckets to strata; ``mean`` has one row per
    stratum and a last row over all documents (for documents with no stored length)."""

    stratum_of_bucket: np.ndarray
    mean: np.ndarray  # (strata + 1, d_sae) float64

    def strata(self, lengths: np.ndarray) -> np.ndarray:
        """Row of ``mean`` for each length (the all-documents row where none is stored)."""
        return _mean_rows(self.stratum_of_bucket, lengths)


def _mean_rows(stratum_of_bucket: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each length's stratum; one past the last stratum (the all-documents row) where none is stored."""
    b = length_bucket(lengths)
    return np.where(b >= 0, stratum_of_bucket[np.maximum(b, 0)], int(stratum_of_bucket.max()) + 1)


def length_baseline(copy: ColumnCopy, n_strata: int = STRATA) -> LengthBaseline:
    """One pass over the copy: strata from its documents' lengths, then per stratum the mean of
    every latent's activation (absent = 0)."""
    shards = list(copy.iter_shards())
    lengths = [column_lengths(sh.table) for sh in shards]
    known = [x[~np.isnan(x)] for x in lengths]
    stratum_of_bucket = bucket_strata(known or [np.zeros(0)], n_strata)
    n_rows = int(stratum_of_bucket.max()) + 2  # the strata, then all documents
    sums, counts = np.zeros((n_rows, copy.d_sae)), np.zeros(n_rows)
    for sh, ln in zip(shards, lengths):
        strata = _mean_rows(stratum_of_bucket, ln)
        for block in _blocks(np.arange(sh.rows)):
            onehot = sp.csr_matrix((np.ones(len(block)), (strata[block], np.arange(len(block)))), shape=(len(sums), len(block)))
            sums += (onehot @ sh.csr(copy.d_sae, block)).toarray()
        counts += np.bincount(strata, minlength=len(sums))
    sums[-1], counts[-1] = sums.sum(axis=0), counts.sum()  # the all-documents row
    mean = sums / np.maximum(counts, 1)[:, None]
    return LengthBaseline(stratum_of_bucket, mean)


def rank_length_neutral(copy: ColumnCopy, baseline: LengthBaseline, flt: Filter | None, latents: list[int],
                        weights: list[float], limit: int) -> list[tuple[str, float, float]]:
    """The ``limit`` best (doc id, score, baseline) of the filtered documents in which some query
    latent fires: score = sum_i w_i a_i - baseline, baseline = sum_i w_i mean_i(stratum of the
    document's length). Ties keep the copy's order (stable)."""
    q = np.zeros(copy.d_sae)
    np.add.at(q, np.asarray(latents, np.int64), np.asarray(weights, np.float64))
    per_stratum = baseline.mean @ q
    shards = list(copy.iter_shards())
    scores, bases, where = [], [], []  # per shard: scores and baselines of the documents that match, (shard, row) of each
    for i, sh in enumerate(shards):
        rows = np.flatnonzero(row_mask(sh.table, flt))
        if not len(rows):
            continue
        raw = np.concatenate([sh.csr(copy.d_sae, block) @ q for block in _blocks(rows)])
        fires = raw > 0  # as a Qdrant sparse search: a document none of the query's latents fire in is no hit
        rows, raw = rows[fires], raw[fires]
        bases.append(per_stratum[baseline.strata(column_lengths(sh.table)[rows])])
        scores.append(raw - bases[-1])
        where.append(np.stack([np.full(len(rows), i), rows], axis=1))
    if not scores:
        return []
    score, base, where_all = np.concatenate(scores), np.concatenate(bases), np.concatenate(where)
    order = np.argsort(-score, kind="stable")[:limit]
    return [(shards[int(i)].table.column("doc_id")[int(r)].as_py(), float(score[j]), float(base[j]))
            for j, (i, r) in zip(order.tolist(), where_all[order].tolist())]
