"""Targeted clustering: cluster documents along an axis the user names.

SAE method: binarise the latents, keep only those whose labels/contexts relate to the axis
("writing style", "tone") - or all informative latents without an axis - and run spectral
clustering on the documents' Jaccard similarities. Each cluster is described by the latents most
over-represented in it (a diff of the cluster against the rest) and its most central documents.
Dense method (baseline): k-means on the stored sentence embeddings. With ``label_field`` both
are scored against a payload field: accuracy after Hungarian matching, ARI and NMI.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from analyses.axis import affinities, fit_pole_model, kmeans, p90_by_latent, positions, resolve_axis, value_profile
from analyses.diff import bh_adjust, two_proportion_test
from analyses.length import cluster_lengths
from analyses.readable import example_of
from analyses.matrix import (
    AnalysisError,
    canonical_order,
    check_fields,
    family_mask,
    latent_cards,
    latent_medians,
    load_matrix,
    require_docs,
    require_view,
    sample_positions,
    slice_counts,
    view_filter,
)
from analyses.params import ClusterParams
from indexer.encode.embedder import get_embedder
from indexer.encode.floor import above_floor
from indexer.labels.dictionary import concept_dictionary
from indexer.store import Store
from indexer.store.catalog import require_index
from indexer.store.columns import column_values, fresh_copy, row_mask
from indexer.store.latent_table import latent_table

MAX_SPECTRAL_DOCS = 6000


def jaccard(B: sp.csr_matrix) -> np.ndarray:
    """Dense n x n Jaccard similarity of binary rows (n is capped by the caller)."""
    inter = (B @ B.T).toarray().astype(np.float32)
    size = np.asarray(B.sum(axis=1)).ravel().astype(np.float32)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        J = np.where(union > 0, inter / union, 0.0)
    np.fill_diagonal(J, 1.0)
    return J


def cluster_scores(pred: np.ndarray, truth: list) -> dict:
    """Agreement of clusters with a payload field: accuracy under the best one-to-one matching,
    ARI, NMI, and the cluster x label table itself (an accuracy alone hid clusters named the
    opposite of what they hold)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = sorted({str(t) for t in truth})
    t = np.array([labels.index(str(x)) for x in truth])
    M = np.zeros((pred.max() + 1, len(labels)))
    for p_, t_ in zip(pred, t):
        M[p_, t_] += 1
    r, c = linear_sum_assignment(-M)
    acc = M[r, c].sum() / len(pred)
    return {"accuracy": round(float(acc), 4), "ari": round(float(adjusted_rand_score(t, pred)), 4),
            "nmi": round(float(normalized_mutual_info_score(t, pred)), 4), "n_labels": len(labels),
            "table": {"labels": labels, "counts": M.astype(int).tolist()}}


def label_checks(out: dict, label_field: str) -> None:
    """Each cluster's majority label; with an axis, a warning wherever the value a cluster is named
    after matches another label better than the cluster's own majority (names and labels are
    matched by the embedder's similarity, one to one)."""
    table = out["scores"].get("table")
    if not table:
        return
    labels, counts = table["labels"], np.asarray(table["counts"])
    for cl in out["clusters"]:
        row = counts[cl["id"]] if cl["id"] < len(counts) else np.zeros(len(labels))
        if row.sum():
            j = int(row.argmax())
            cl["majority_label"], cl["majority_share"] = labels[j], round(float(row[j] / row.sum()), 4)
    names = (out.get("axis_resolved") or {}).get("values") or []
    if not names or len(labels) < 2:
        return
    emb = get_embedder()
    sim = emb.encode([str(v) for v in names]) @ emb.encode([f"{label_field} {lab}" for lab in labels]).T
    r, c = linear_sum_assignment(-sim)
    label_of = {names[i]: labels[j] for i, j in zip(r, c)}
    warnings = []
    for cl in out["clusters"]:
        named = (cl.get("axis_values") or [{}])[0].get("value")
        want = label_of.get(named)
        if want and cl.get("majority_label") and cl["majority_label"] != want:
            warnings.append(f"cluster {cl['id']} is named {named!r} (read as {label_field}={want}), but "
                            f"{cl['majority_share']:.0%} of its {cl['size']} documents are {label_field}={cl['majority_label']}")
    if warnings:
        out["warnings"] = out.get("warnings", []) + warnings


def _example_docs(store: Store, out: dict, chars: int = 160, view: str = "response") -> None:
    """Each cluster's examples with the start of their text (of the view clustered) and their
    payload fields, so members can be checked against the data (a cluster named
    "human-written" that holds machine text)."""
    ids = sorted({d for c in out["clusters"] for d in c["examples"]})
    docs = {h.doc_id: h.payload for h in store.get_docs(ids)} if ids else {}
    for c in out["clusters"]:
        c["example_docs"] = [example_of(d, docs.get(d, {}), None, chars // 2, view=view) for d in c["examples"]]


def _axis_model(store: Store, index: str, axis: str, d_sae: int, cols: np.ndarray):
    """The resolved axis, its (d_sae, values) latent affinities restricted to the latents that
    pass the coverage filters, and p90 per latent (see :mod:`analyses.axis`)."""
    ax = resolve_axis(axis)
    table = latent_table(store)
    recipe = require_index(store, index).recipe
    d = concept_dictionary(recipe)
    W = affinities(table, ax, d_sae, d.space_directions if d is not None else None, recipe.sae.d_sae,
                   d.own_embedder if d is not None else None)
    keep = np.zeros(d_sae, bool)
    keep[cols] = True
    W[~keep] = 0.0
    if not W.any():
        raise AnalysisError(f"no latent of this index leans to any value of the axis {axis!r}")
    return ax, W, p90_by_latent(table, d_sae)


def _named(cards: dict[int, dict], latent: int) -> dict:
    """A latent's label, quality and family, as every cluster and pole-model entry shows them."""
    card = cards.get(latent, {})
    return {"label": card.get("label", ""), "quality": card.get("quality"), "family": card.get("family")}


def _add_axis(store: Store, out: dict, ax, F: np.ndarray, pred: np.ndarray, k: int, pole=None) -> None:
    """What each cluster is on the axis: its values above the slice's mean; for two poles, the
    latents the pole model leans on most for each."""
    out["axis_resolved"] = ax.as_dict()
    for c, vals in zip(out["clusters"], value_profile(F, pred, k, ax)):
        c["axis_values"] = vals
    if pole is not None:
        first, second = pole.strongest()
        cards = latent_cards(store, first + second)
        out["axis_resolved"]["pole_model"] = {
            "seed_documents": pole.seeds,
            "latents": {v: [{"latent": i, **_named(cards, i), "weight": round(float(pole.coef[i]), 4)} for i in ids]
                        for v, ids in zip(ax.values, (first, second))}}


def cluster(
    store: Store,
    index: str,
    params: ClusterParams | None = None,
    min_coverage: float = 0.005,
    max_coverage: float = 0.5,
    threshold: float = 0.0,
    n_examples: int = 5,
    seed: int = 0,
    with_coords: bool = False,
    floor: float = 0.0,
    stream_above: int | None = None,
) -> dict:
    """``stream_above`` (default MAX_SPECTRAL_DOCS): slices larger than this are clustered in
    passes over the columnar copy instead of in memory (same algorithm, same result)."""
    p = params or ClusterParams()
    where, k, axis, method, label_field, view = p.to_filter(p.where), p.k, p.axis, p.method, p.label_field, p.view
    stream_above = MAX_SPECTRAL_DOCS if stream_above is None else stream_above
    check_fields(store, index, where, "--where")
    require_view(store, index, view)
    if method == "dense" and view != "response":
        raise AnalysisError("--method dense clusters responses only (the dense vector is the text's); use --method sae with --view prompt")
    fields = [label_field] if label_field else []
    if method == "sae":
        copy = fresh_copy(store, require_index(store, index).recipe, view=view)
        tables = list(copy.iter_shards(arrays=False))  # row tables and order keys only
        selected = [np.flatnonzero(row_mask(sh.table, view_filter(where, view))) for sh in tables]
        if sum(len(r) for r in selected) > stream_above:
            if p.family != "all" or view != "response":
                raise AnalysisError(f"--family {p.family} / --view {view} clusters at most {stream_above:,} documents "
                                    "(narrow the slice with --where)")
            return _cluster_streaming(store, index, copy, tables, selected, where, k, axis, label_field,
                                      min_coverage, max_coverage, threshold, n_examples, seed, floor, with_coords)
    # No noise floor by default (unlike diff and correlations): on 999 whole BBC articles, topic
    # accuracy was 0.741 at floor 0, 0.735 at 0.5 and 0.707 at 1.0 - Jaccard over many latents
    # already discounts weak one-off firings.
    m = load_matrix(store, index, where, fields=fields, with_dense=(method == "dense"), floor=floor if method == "sae" else 0.0,
                    view=view)
    require_docs(m, "the filter", minimum=k)
    if p.family != "all":  # the other family's latents zeroed: ids stay where they are
        m.X = (m.X @ sp.diags(family_mask(require_index(store, index).recipe, p.family, m.X.shape[1]).astype(np.float32))).tocsr()
        m.X.eliminate_zeros()
    if label_field and not any(label_field in p for p in m.payload):
        raise AnalysisError(f"unknown field {label_field!r}: no document in the slice has it")
    B = m.binary(threshold)
    freq = np.asarray(B.sum(axis=0)).ravel() / m.n_docs
    cols = np.flatnonzero((freq >= min_coverage) & (freq <= max_coverage))
    if method == "sae" and len(cols) == 0:
        raise AnalysisError("no latents left to cluster on (coverage filters too strict)")
    rng = np.random.default_rng(seed)
    n = m.n_docs
    fit_rows = np.arange(n) if n <= MAX_SPECTRAL_DOCS else np.sort(rng.choice(n, MAX_SPECTRAL_DOCS, replace=False))
    ax = F = pole = None
    if method == "sae" and axis:
        ax, W, p90 = _axis_model(store, index, axis, m.X.shape[1], cols)
        F = positions(m.X, p90, W)
        if ax.two_poles:
            pole = fit_pole_model(m.X[fit_rows], p90, F[fit_rows], cols)
            Z = pole.score(m.X, p90)
        else:
            Z = F
            cols = np.flatnonzero(W.any(axis=1))
        pred = kmeans(Z[fit_rows], k, seed).predict(Z)
    elif method == "sae":
        Bs = B[:, cols].tocsr()
        pred = _spectral(Bs, fit_rows, k, seed)
    else:
        from sklearn.cluster import KMeans

        pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(m.dense)  # type: ignore[attr-defined]
    clusters = _describe(store, m, B, pred, k, n_examples)
    out = {"documents": n, "method": method, "axis": axis, "latents_used": int(len(cols)) if method == "sae" else None,
           "clusters": clusters, "assignments": {d: int(c) for d, c in zip(m.doc_ids, pred)}, "scores": {}}
    if ax is not None:
        _add_axis(store, out, ax, F, pred, k, pole)
    if label_field:
        truth = [p.get(label_field) for p in m.payload]
        out["scores"] = cluster_scores(pred, truth)
        label_checks(out, label_field)
    cluster_lengths(fresh_copy(store, require_index(store, index).recipe, view=view), out)
    _example_docs(store, out, view=view)
    if view != "response":
        out["view"] = view
    if with_coords:  # 2-D projection for --plot (not part of the JSON contract)
        from sklearn.decomposition import TruncatedSVD

        feats = (F if F is not None else B[:, cols]) if method == "sae" else m.dense  # type: ignore[attr-defined]
        out["_coords"] = TruncatedSVD(2, random_state=seed).fit_transform(feats)
        out["_pred"] = pred
    return out


def _cluster_streaming(store: Store, index: str, copy, tables: list, selected: list[np.ndarray], where, k: int, axis,
                       label_field, min_coverage: float, max_coverage: float, threshold: float,
                       n_examples: int, seed: int, floor: float, with_coords: bool = False) -> dict:
    """The same clustering for slices larger than MAX_SPECTRAL_DOCS without holding the slice in
    memory: spectral clustering on the same seeded sample the in-memory path fits on, then two
    passes over the columnar copy - assign every document to the nearest cluster profile (cosine)
    and count latents per cluster; then pick each cluster's most central documents. ``tables`` and
    ``selected`` are the copy's shards (without vectors) and the slice's rows in each."""
    n = sum(len(r) for r in selected)
    ref = latent_medians(store, index) if floor > 0 else None
    _, counts = slice_counts(copy, where, floor, ref, threshold)
    freq = counts / n
    cols = np.flatnonzero((freq >= min_coverage) & (freq <= max_coverage))
    if len(cols) == 0:
        raise AnalysisError("no latents left to cluster on (coverage filters too strict)")
    canon = canonical_order(tables, selected)
    rank = np.empty_like(canon)
    rank[canon] = np.arange(len(canon))  # copy position -> canonical position
    fit_pos = sample_positions(n, MAX_SPECTRAL_DOCS, seed)  # canonical positions, as the in-memory path samples
    d_sae = copy.d_sae
    ax = F_all = pred_all = pole = None

    def activations():  # (copy position, the slice's activations in one shard), floor applied
        pos = 0
        for shard, rows in zip(copy.iter_shards(), selected):
            if len(rows):
                X = shard.csr(d_sae, None if len(rows) == shard.rows else rows)
                if ref is not None and floor > 0:
                    X.data = np.where(above_floor(X.data, X.indices, ref, floor), X.data, 0).astype(np.float32)
                    X.eliminate_zeros()
                yield pos, X
                pos += len(rows)

    if axis:  # one pass for every document's axis position, k-means fitted on the same sample
        ax, W, p90 = _axis_model(store, index, axis, d_sae, cols)
        F_all = np.zeros((n, W.shape[1]), np.float32)
        for pos, X in activations():
            F_all[pos : pos + X.shape[0]] = positions(X, p90, W)
        Z = F_all
        if ax.two_poles:  # the pole model, fitted on the sample; a second pass scores every document
            fit = load_matrix(store, index, where, floor=floor, medians=ref, positions=fit_pos)
            pole = fit_pole_model(fit.X, p90, F_all[canon[fit_pos]], cols)
            Z = np.zeros((n, 1), np.float32)
            for pos, X in activations():
                Z[pos : pos + X.shape[0]] = pole.score(X, p90)
        else:
            cols = np.flatnonzero(W.any(axis=1))
        pred_all = kmeans(Z[canon[fit_pos]], k, seed).predict(Z)
    else:
        fit = load_matrix(store, index, where, floor=floor, medians=ref, positions=fit_pos)
        from sklearn.cluster import SpectralClustering

        Bfit = fit.binary(threshold)[:, cols].tocsr()
        labels_fit = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                        assign_labels="cluster_qr").fit_predict(jaccard(Bfit))
        cent = np.vstack([np.asarray(Bfit[labels_fit == c].mean(axis=0)).ravel() for c in range(k)])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-8)
        fit_copy = canon[fit_pos]  # the same documents in copy order
        o = np.argsort(fit_copy)
        fit_copy, fit_labels = fit_copy[o], labels_fit[o]
        cent_full = np.zeros((copy.d_sae, k))  # centroids over all latents (zero off-axis): no column slicing per shard
        cent_full[cols] = cent.T
    cin = np.zeros((k, d_sae))
    ids: list[str] = []
    truth: list = []
    preds = []

    def binary_rows(shard, rows):
        X = shard.csr(d_sae, None if len(rows) == shard.rows else rows)
        X.data = above_floor(X.data, X.indices, ref, floor, threshold).astype(np.float32)
        X.eliminate_zeros()
        return X

    pos = 0
    for shard, rows in zip(copy.iter_shards(), selected):
        if len(rows) == 0:
            continue
        B = binary_rows(shard, rows)
        if pred_all is not None:
            pred = pred_all[pos : pos + len(rows)]
        else:
            pred = np.asarray(B @ cent_full).argmax(axis=1)
            a, b = np.searchsorted(fit_copy, [pos, pos + len(rows)])
            pred[fit_copy[a:b] - pos] = fit_labels[a:b]
        pos += len(rows)
        preds.append(pred)
        cin += (B.T @ sp.csr_matrix((np.ones(len(pred)), (np.arange(len(pred)), pred)), shape=(len(pred), k))).T.toarray()
        col = shard.table.column("doc_id")
        ids.extend(col.take(pa.array(rows)).to_pylist())
        if label_field:
            vals = column_values(shard.table, label_field)
            truth.extend(vals[r] for r in rows)
    pred = np.concatenate(preds)
    sizes = np.bincount(pred, minlength=k)
    prof = cin / np.maximum(sizes, 1)[:, None]
    best: list[list[tuple[float, int]]] = [[] for _ in range(k)]
    pos = 0
    for shard, rows in zip(copy.iter_shards(), selected):  # second pass: each cluster's most central documents
        if len(rows) == 0:
            continue
        B = binary_rows(shard, rows)
        p = pred[pos : pos + len(rows)]
        score = np.asarray(B @ prof.T)[np.arange(len(rows)), p]  # each row against its own cluster's profile
        for c in range(k):
            m_ = np.flatnonzero(p == c)
            top = m_[np.lexsort((rank[pos + m_], -score[m_]))][:n_examples]
            best[c] = sorted(best[c] + [(-float(score[t]), int(rank[pos + t]), pos + int(t)) for t in top])[:n_examples]
        pos += len(rows)
    clusters = _describe_counts(store, cin, sizes, n, [[ids[r] for _, _, r in best[c]] for c in range(k)])
    out = {"documents": n, "method": "sae", "axis": axis, "latents_used": int(len(cols)), "clusters": clusters,
           "assignments": {ids[r]: int(pred[r]) for r in canon}, "scores": {}, "fitted_on": int(len(fit_pos))}
    if ax is not None:
        _add_axis(store, out, ax, F_all, pred, k, pole)
    if label_field:
        if all(t is None for t in truth):
            raise AnalysisError(f"unknown field {label_field!r}: no document in the slice has it")
        out["scores"] = cluster_scores(pred, truth)
        label_checks(out, label_field)
    cluster_lengths(copy, out)
    _example_docs(store, out)
    if with_coords:  # --plot shows the fitted sample
        from sklearn.decomposition import TruncatedSVD

        if F_all is not None:
            out["_coords"] = TruncatedSVD(2, random_state=seed).fit_transform(F_all[canon[fit_pos]])
            out["_pred"] = pred[canon[fit_pos]]
        else:
            out["_coords"] = TruncatedSVD(2, random_state=seed).fit_transform(Bfit)
            out["_pred"] = labels_fit
    return out


def _describe_counts(store: Store, cin: np.ndarray, sizes: np.ndarray, n: int, examples: list[list[str]]) -> list[dict]:
    """Each cluster's most over-represented latents (in-cluster vs the rest), from latent counts."""
    total = cin.sum(axis=0)
    per, all_top = [], []
    for c in range(len(sizes)):
        nin, nout = int(sizes[c]), max(n - int(sizes[c]), 1)
        if nin == 0:
            per.append([])
            continue
        d = cin[c] / nin - (total - cin[c]) / nout
        _, p = two_proportion_test(cin[c], nin, total - cin[c], nout)
        cand = np.flatnonzero(d > 0)
        padj = np.ones_like(p)
        padj[cand] = bh_adjust(p[cand])
        top = cand[np.argsort(-d[cand], kind="stable")][:8]
        per.append([(int(t), float(d[t]), float(cin[c][t] / nin), float(padj[t])) for t in top])
        all_top += [int(t) for t in top]
    cards = latent_cards(store, all_top)
    return [{"id": c, "size": int(sizes[c]),
             "latents": [{"latent": t, **_named(cards, t), "diff": round(dd, 4), "freq_in": round(fi, 4), "p_adj": pa}
                         for t, dd, fi, pa in per[c]],
             "examples": examples[c]} for c in range(len(sizes))]


def _spectral(Bs: sp.csr_matrix, fit_rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    J = jaccard(Bs[fit_rows])
    labels_fit = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr").fit_predict(J)
    if len(fit_rows) == Bs.shape[0]:
        return labels_fit
    # Assign the rest to the cluster whose mean binary profile is most similar (cosine).
    cent = np.vstack([np.asarray(Bs[fit_rows[labels_fit == c]].mean(axis=0)).ravel() for c in range(k)])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-8)
    pred = np.asarray(Bs @ cent.T).argmax(axis=1)
    pred[fit_rows] = labels_fit
    return pred


def _describe(store: Store, m, B: sp.csr_matrix, pred: np.ndarray, k: int, n_examples: int) -> list[dict]:
    n = m.n_docs
    total = np.asarray(B.sum(axis=0)).ravel()
    out = []
    all_top: list[int] = []
    per = []
    for c in range(k):
        rows = np.flatnonzero(pred == c)
        if len(rows) == 0:
            per.append((c, rows, []))
            continue
        cin = np.asarray(B[rows].sum(axis=0)).ravel()
        cout = total - cin
        nin, nout = len(rows), max(n - len(rows), 1)
        d = cin / nin - cout / nout
        _, p = two_proportion_test(cin, nin, cout, nout)
        cand = np.flatnonzero(d > 0)
        padj = np.ones_like(p)
        padj[cand] = bh_adjust(p[cand])
        top = cand[np.argsort(-d[cand], kind="stable")][:8]
        per.append((c, rows, [(int(t), float(d[t]), float(cin[t] / nin), float(padj[t])) for t in top]))
        all_top += [int(t) for t in top]
        # central documents: most latents in common with the cluster profile
    cards = latent_cards(store, all_top)
    for c, rows, top in per:
        if len(rows):
            prof = np.asarray(B[rows].mean(axis=0)).ravel()
            central = rows[np.argsort(-np.asarray(B[rows] @ prof).ravel(), kind="stable")][:n_examples]
        else:
            central = []
        out.append({"id": c, "size": int(len(rows)),
                    "latents": [{"latent": t, **_named(cards, t), "diff": round(dd, 4), "freq_in": round(fi, 4), "p_adj": pa}
                                for t, dd, fi, pa in top],
                    "examples": [m.doc_ids[r] for r in central]})
    return out
