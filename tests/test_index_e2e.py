"""End to end on real text with the real reader and the shipped SAE: the CLI contract,
idempotency, crash safety (kill -9), recipe mismatch and bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from tests.conftest import ROOT, cli, load_bbc, write_jsonl


def test_info_contract(bbc_index):
    r = cli("info", "--index", bbc_index, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["documents"] == 120 and info["datasets"] == {"bbc": 120}
    assert info["reader"]["model"] == "gemma3-270m" and info["reader"]["layer"] >= 1
    assert info["sae"]["d_sae"] >= 8 * info["reader"]["d_model"] and len(info["sae"]["hash"]) == 16


def test_latents_contract_and_examples_mark_firing_tokens(bbc_index):
    r = cli("latents", "--index", bbc_index, "--top", "5", "--json")
    assert r.exit_code == 0, r.output
    lat = json.loads(r.stdout)["latents"]
    assert len(lat) == 5
    assert [l["doc_freq"] for l in lat] == sorted((l["doc_freq"] for l in lat), reverse=True)
    for l in lat:
        assert {"id", "label", "description", "doc_freq", "examples"} <= set(l)
        assert l["label"] and l["examples"]
        # every label has a held-out score, dictionary or offline (offline ones had none)
        assert isinstance(l["quality"], float) and 0.0 <= l["quality"] <= 1.0, l
        assert l["kind"] in ("concept", "lexical")
        ex = l["examples"][0]
        s, e = ex["span"]
        assert 0 <= s < e <= len(ex["text"])
    q = json.loads(cli("latents", "--index", bbc_index, "--query", "football match", "--top", "3", "--json").stdout)["latents"]
    assert len(q) == 3 and all("similarity" in l for l in q)


def test_reindexing_adds_nothing(bbc_index, tmp_path):
    path = write_jsonl(tmp_path / "again.jsonl", load_bbc(24))
    r = cli("index", str(path), "--index", bbc_index, "--dataset", "bbc", "--id-field", "id", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 0 and rep["already_indexed"] == 120
    assert json.loads(cli("info", "--index", bbc_index, "--json").stdout)["documents"] == 120


def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path):
    good = load_bbc(2)
    lines = [json.dumps(r) for r in good[:3]] + ['{"text": "broken'] + [json.dumps(r) for r in good[3:]]
    p = tmp_path / "broken.jsonl"
    p.write_text("\n".join(lines) + "\n")
    r = cli("index", str(p), "--index", "broken", "--json")
    assert r.exit_code == 2
    assert f"{p}:4: invalid JSON" in r.output and "Traceback" not in r.output
    assert cli("info", "--index", "broken", "--json").exit_code == 2  # nothing was created
    p2 = tmp_path / "empty_and_broken.jsonl"
    p2.write_text("\n".join(lines + ['{"text": ""}']) + "\n")
    r = cli("index", str(p2), "--index", "broken", "--skip-invalid", "--json", "--quiet")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["invalid"], rep["empty"], rep["indexed"]) == (1, 1, 10)
    r = cli("index", str(tmp_path / "nope.jsonl"), "--index", "broken")
    assert r.exit_code == 2 and "no such file" in r.output
    r = cli("info", "--index", "../etc")
    assert r.exit_code == 2 and "invalid index name" in r.output


def test_other_sae_is_refused(bbc_index, tmp_path):
    import torch

    from indexer.encode.sae import load_sae, save_sae

    sae = load_sae()
    other = tmp_path / "other_sae"
    save_sae(other, sae.W_enc * 1.01, sae.b_enc, sae.W_dec, sae.b_dec, k=sae.cfg.k,
             metadata=sae.cfg.metadata, dtype=torch.float16)
    path = write_jsonl(tmp_path / "one.jsonl", load_bbc(1))
    r = cli("index", str(path), "--index", bbc_index, "--sae", str(other), "--json")
    assert r.exit_code == 2 and "built with another recipe" in r.output and "sae.hash" in r.output


def _count(index: str) -> int:
    out = subprocess.run([sys.executable, "-m", "server.cli", "info", "--index", index, "--json"], cwd=ROOT,
                         capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["documents"]


@pytest.mark.slow  # runs the reader model in a subprocess
def test_kill_9_mid_index_then_rerun_gives_exactly_the_documents(tmp_path):
    n = 60
    rows = load_bbc(n // 5, seed=7, max_chars=300)  # openings: the kill and resume are the point, not length
    path = write_jsonl(tmp_path / "crash.jsonl", rows)
    cmd = [sys.executable, "-m", "server.cli", "index", str(path), "--index", "crash", "--dataset", "d",
           "--id-field", "id", "--chunk-docs", "10"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ.copy())
    seen = ""
    deadline = time.time() + 240
    while time.time() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        seen += ch
        done = [int(k) for k in re.findall(rf"(\d+)/{n}\b", seen[-200:])]
        if done and 20 <= done[-1] < n - 20:  # a few chunks written, more to come
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"/{n}" in seen, seen[-500:]
    partial = _count("crash")
    assert 0 < partial < n
    from indexer.store.columns import copy_for
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    store = open_store("crash")
    rows = copy_for(store, read_manifest(store).recipe).n_rows()
    store.close()
    assert rows <= partial  # the copy is written after Qdrant: a kill can leave it short, never ahead
    again = subprocess.run(cmd + ["--json", "--quiet"], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    assert again.returncode == 0, again.stderr
    rep = json.loads(again.stdout)
    assert rep["already_indexed"] == partial and rep["indexed"] == n - partial
    assert _count("crash") == n
    # the columnar copy (what analyses read) ends equal to Qdrant, row for row
    from indexer.store.columns import fresh_copy
    from indexer.encode.recipe import read_manifest
    from indexer.store import open_store

    store = open_store("crash")
    try:
        copy = fresh_copy(store, read_manifest(store).recipe, progress=False)
        got = {}
        for sh in copy.iter_shards():
            for r, d in enumerate(sh.doc_ids()):
                a, b = sh.indptr[r], sh.indptr[r + 1]
                got[d] = dict(zip(sh.indices[a:b].astype(int).tolist(), sh.values[a:b].tolist()))
        want = {h.doc_id: h.sparse for hits in store.scroll_docs(with_sparse=True, payload_fields=["doc_id"]) for h in hits}
        assert got == want and len(got) == n
    finally:
        store.close()
