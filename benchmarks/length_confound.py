"""A planted length confound in real text: does the diff's length correction remove it, and how
many length strata does it need?

A = N real texts (Rotten Tomatoes snippets from ../shared, else BBC first paragraphs from the
demo wheel). B = the same texts, half of them lengthened with another A text (filler from the
same pool: no new content, only length), and ``--plant`` of them ending with a fixed phrase
(the real difference). Indexed with the default recipe; then ``diff A vs B`` without the
correction and with 2, 4, 8, 16 strata: latents significant (BH q < 0.05) that are not the
phrase's, and where the phrase's latents rank.

    python benchmarks/length_confound.py [--n 400] [--plant 0.3]
Writes benchmarks/results/length_confound.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, real_texts, write_result  # noqa: E402

PHRASE = "I hope it is correct."


def texts(n: int, seed: int) -> tuple[list[str], str]:
    p = SHARED / "rotten_tomatoes.jsonl"
    if p.exists():
        rows = [json.loads(line) for line in p.read_text().split("\n") if line.strip()]
        rows = [r["text"] for r in rows if r.get("category") in ("fresh", "rotten")]
        random.Random(seed).shuffle(rows)
        return rows[: 2 * n], "../shared/data/rotten_tomatoes.jsonl (fresh + rotten)"
    got, src = real_texts(2 * n, seed)
    return [t[:400] for t in got], src


def build(n: int, plant: float, seed: int) -> tuple[list[dict], str]:
    pool, src = texts(n, seed)
    base, filler = pool[:n], pool[n:]
    rng = random.Random(seed + 1)
    rows = []
    for i, t in enumerate(base):
        rows.append({"id": f"a{i}", "text": t, "slice": "A"})
        b = t + " " + filler[i] if i % 2 else t
        planted = rng.random() < plant
        if planted:
            b = b + " " + PHRASE
        rows.append({"id": f"b{i}", "text": b, "slice": "B", "planted": planted})
    return rows, src


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="texts per slice")
    ap.add_argument("--plant", type=float, default=0.3, help="share of B ending with the phrase")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import os

    os.environ.setdefault("SAEDEX_HOME", tempfile.mkdtemp(prefix="saedex-length-"))
    import analyses.diff as diff_mod
    from analyses.length import bucket_strata
    from analyses.params import DiffParams
    from indexer.ingest.pipeline import Indexer, index_corpus
    from indexer.store import open_store

    rows, src = build(args.n, args.plant, args.seed)
    path = Path(tempfile.mkdtemp(prefix="saedex-length-data-")) / "length_confound.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = "lengthconf"
    t0 = time.perf_counter()
    if not open_store(name).exists():
        index_corpus(path, name, dataset="rt", id_field="id", indexer=Indexer(), progress=True)
    out: dict = {"source": src, "n_per_slice": args.n, "plant": args.plant, "phrase": PHRASE,
                 "index_s": round(time.perf_counter() - t0, 1), "runs": []}
    phrase_docs = {r["id"] for r in rows if r.get("planted")}
    with open_store(name) as store:
        for strata in (1, 2, 4, 8, 16):
            diff_mod.bucket_strata = (lambda s: lambda ls, _n: bucket_strata(ls, s))(strata)
            params = DiffParams(a={"slice": "B"}, b={"slice": "A"}, top=1000, length="stratified" if strata > 1 else "none")
            t = time.perf_counter()
            res = diff_mod.diff(store, name, params, n_examples=5)
            sig = [r for r in res["latents"] if r["p_adj"] < 0.05]
            # a latent "is the phrase's" when its strongest B documents are planted ones
            phrase = [r for r in sig if r["examples"] and sum(e in phrase_docs for e in r["examples"]) >= 0.8 * len(r["examples"])]
            out["runs"].append({"strata": strata if strata > 1 else "none", "seconds": round(time.perf_counter() - t, 2),
                                "significant": len(sig), "phrase_latents": len(phrase), "other_significant": len(sig) - len(phrase),
                                "more_in_planted_side": sum(r["more_in"] == "a" for r in sig),
                                "first_phrase_rank": next((k + 1 for k, r in enumerate(res["latents"]) if r in phrase), None),
                                "length": res["length"], "top5": [(r["label"], r["more_in"], r["diff"], r.get("diff_length_matched"))
                                                                  for r in res["latents"][:5]]})
            print(json.dumps(out["runs"][-1])[:400], file=sys.stderr)
    write_result(f"length_confound-plant{round(args.plant * 100)}", out)


if __name__ == "__main__":
    main()
