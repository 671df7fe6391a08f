"""The shared core: typed recipe and index state, settings, and parameter models that the CLI,
the API and the library all use (no model loads: fast tier)."""

from __future__ import annotations

import pytest

from analyses.params import ClusterParams, CorrelationsParams, DiffParams
from search.latents import LatentsParams
from indexer.core.errors import InputError
from indexer.core.params import ParamsError
from indexer.encode.recipe import (
    IndexState, Manifest, ManifestMismatch, OutdatedIndex, Recipe, ReaderRecipe, SaeRecipe, create_manifest, read_manifest,
    update_state,
)
from indexer.core.settings import Settings
from search.params import SearchParams

MODELS = [SearchParams, DiffParams, CorrelationsParams, ClusterParams, LatentsParams]


def _recipe(**reader) -> Recipe:
    return Recipe(reader=ReaderRecipe(**({"model": "gemma3-270m", "layer": 6, "max_tokens": 4096, "window": 1024,
                                          "overlap": 128, "d_model": 640} | reader)),
                  sae=SaeRecipe(path="default", hash="abc", d_sae=16384, architecture="topk", k=32), embedder="minilm")


def test_recipe_round_trips_and_names_what_differs():
    r = _recipe()
    assert Recipe.from_dict(r.to_dict()) == r
    m = Manifest(r, IndexState(datasets=["a"], latent_stats_docs=3, generation="g", revision="v"))
    assert Manifest.from_dict(m.to_dict()) == m
    problems = r.mismatches(_recipe(layer=9))
    assert problems == ["reader.layer: index has 6, this run uses 9"]
    with pytest.raises(ManifestMismatch, match="refusing to mix vectors .*reader.layer"):
        r.require_compatible(_recipe(layer=9), "x")
    r.require_compatible(Recipe.from_dict(r.to_dict() | {"inference": {"precision": "bf16"}}), "x")  # speed is not identity


def test_recipe_refuses_other_versions_and_incomplete_records():
    with pytest.raises(OutdatedIndex, match="older saedex"):
        Recipe.from_dict({"version": 1, "reader": {}}, "old")
    with pytest.raises(OutdatedIndex, match="newer saedex"):
        Recipe.from_dict(_recipe().to_dict() | {"version": 99}, "new")
    with pytest.raises(ManifestMismatch, match="incomplete"):
        Recipe.from_dict({"version": 2, "reader": {"model": "m"}, "sae": {"d_sae": 8}}, "half")


def test_index_state_has_one_writer(tmp_path):
    from indexer.store import EdgeStore

    store = EdgeStore(tmp_path / "idx")
    store.create(4, 4)
    create_manifest(store, _recipe())
    first = read_manifest(store)
    update_state(store, add_dataset="bbc")
    update_state(store, add_dataset="bbc", latent_stats_docs=7)
    after = read_manifest(store)
    assert after.state.datasets == ["bbc"] and after.state.latent_stats_docs == 7
    assert after.state.generation == first.state.generation and after.state.revision != first.state.revision
    assert after.recipe == first.recipe
    with pytest.raises(TypeError):
        update_state(store, generation="forged")
    store.drop()


def test_settings_read_the_environment_once_typed():
    s = Settings.from_env({"SAEDEX_HOME": "/tmp/h", "SAEDEX_LLM_TIMEOUT": "30", "SAEDEX_API_DOCS": "1", "OMP_NUM_THREADS": "1"})
    assert str(s.home) == "/tmp/h" and s.llm_timeout == 30.0 and s.api_docs and s.threads_pinned and s.precision == "auto"
    with pytest.raises(InputError, match="SAEDEX_LLM_CONCURRENCY='many' is not a whole number"):
        Settings.from_env({"SAEDEX_LLM_CONCURRENCY": "many"})


@pytest.mark.parametrize("model", MODELS)
def test_cli_options_are_generated_from_the_model(model):
    """The typer command of each operation offers exactly the model's fields, with its defaults."""
    import inspect

    import analyses.cli
    import search.cli

    cmd = {SearchParams: search.cli.search_cmd, DiffParams: analyses.cli.diff_cmd, CorrelationsParams: analyses.cli.correlations_cmd,
           ClusterParams: analyses.cli.cluster_cmd, LatentsParams: search.cli.latents_cmd}[model]
    params = inspect.signature(cmd).parameters
    for name, f in model.model_fields.items():
        assert name in params, name
        default = params[name].default.default
        if f.default_factory is None and not f.is_required():
            assert default == f.default, name


def test_bounds_are_the_same_for_cli_and_api():
    """One declaration: the API's request schema is the model's."""
    from server.app import create_app

    schema = create_app(preload=False, api_keys=["k"], audit_log=False).openapi()
    body = schema["paths"]["/v1/indexes/{name}/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/SearchParams")
    k = schema["components"]["schemas"]["SearchParams"]["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (SearchParams.model_fields["k"].metadata[0].ge, SearchParams.model_fields["k"].metadata[1].le)


def test_parameter_errors_are_one_line_naming_the_flag():
    with pytest.raises(ParamsError, match=r"^--n-latents: Input should be less than or equal to 1000$"):
        SearchParams.parse(query="x", n_latents=5000)
    with pytest.raises(ParamsError, match=r"^--like works with method sae$"):
        SearchParams.parse(like="d1", method="bm25")
    with pytest.raises(ParamsError, match=r"^--query: must not be empty$"):
        LatentsParams.parse(query="  ")
    assert DiffParams.parse(a={"t": "x"}, b=[{"t": "y"}, {"t": "z"}]).b_slices() == [{"t": "y"}, {"t": "z"}]


def test_the_cli_turns_where_options_into_the_models_json_form(monkeypatch):
    """``--where k=v --where k=w`` reaches the library as {"k": ["v", "w"]}, the API's form."""
    from typer.testing import CliRunner

    import analyses.cli
    from server.cli import app

    seen = {}

    def fake(store, index, params, **_):
        seen["params"] = params
        return {"pairs": [], "documents": 0, "dropped_same_span": 0, "dropped_similar_labels": 0}

    monkeypatch.setattr(analyses.cli, "correlations", fake)  # the name the command calls
    r = CliRunner().invoke(app, ["correlations", "--index", "anyname", "--where", "topic=a", "--where", "topic=b",
                                 "--where", "n=3", "--top", "7", "--json"])
    assert r.exit_code == 0, r.output
    assert seen["params"] == CorrelationsParams(where={"topic": ["a", "b"], "n": 3}, top=7)


def test_offline_labels_follow_the_strongest_examples():
    """Examples come strongest first; a label must show what they fire on, as users see them
    as the latent's evidence (it was labelled by the tokens of weaker, more numerous ones)."""
    from indexer.labels.offline import OfflineLabeller

    strong = [{"text": f"singer {name} sang", "span": [7, 11]} for name in ("Martika", "Martyn")]
    weak = [{"text": "the mortgage rate", "span": [4, 12]}] * 3
    label = OfflineLabeller(["a b c"] * 5).label(strong + weak)["label"]
    assert label.startswith('"mart"'), label


def test_dictionary_qualifiers_stay_only_where_this_index_shows_them():
    from indexer.labels.dictionary.localise import localise_label

    qwest = [{"text": "a higher offer from Qwest.", "span": [20, 21]}, {"text": "one of Qantas' key routes", "span": [7, 8]}]
    # the training corpus's qualifier goes; what this index's examples share (split names) comes
    assert localise_label({"label": 'token "q" (Pittsburgh)', "description": "d.", "kind": "lexical"}, qwest)[0] == 'token "q" (name start)'
    ends = [{"text": "by the end of May", "span": [11, 13]}, {"text": "at the end of the day", "span": [11, 13]}]
    assert localise_label({"label": 'token "of" after "end"', "description": "d.", "kind": "lexical"}, ends)[0] == 'token "of" after "end"'
    assert localise_label({"label": 'token "of" after "top"', "description": "d.", "kind": "lexical"}, ends)[0] == 'token "of"'
    concept = {"label": "retort", "description": "d.", "kind": "concept"}
    assert localise_label(concept, ends)[0] == "retort"  # concept labels were chosen on meaning: kept


def test_surface_forms_of_a_firing_token():
    """Forms are read from the characters around the token: split names, word pieces, initials."""
    from indexer.labels.forms import forms_of

    assert {"name_start", "name_piece"} <= forms_of("was called Quirksville.", [10, 15])  # " Quir"
    assert "name_end" in forms_of('said Kiplagat. "We', [9, 13])  # "agat"
    assert forms_of("in 1980 comedy", [5, 6]) == {"number_piece", "word_piece"}  # "8" in 1980
    assert "initial" in forms_of("AC).  J Whitlock (Trafford", [6, 7])
    assert forms_of("anonymous proxy services", [9, 15]) == set()  # a whole ordinary word
    assert forms_of("It's fine", [2, 4]) == set()  # "'s" is its own word, not a piece of "It"
    assert forms_of("a - b", [1, 3]) == set()  # punctuation has no form


def test_offline_label_names_the_shared_form_of_different_tokens():
    """Different tokens that are all first pieces of split names are labelled by that form, with
    two of the words as evidence; a dominant token stays the label, qualified by its form."""
    from indexer.labels.offline import OfflineLabeller

    lab = OfflineLabeller(["the cat sat", "a dog ran"] * 5)
    names = [{"text": t, "span": s} for t, s in (("was called Quirksville.", [10, 15]), ("Mike Prettejohn, Netcraft", [4, 8]),
                                                 ("Palaniappan Chidambaram, India", [11, 14]), ("some of Metlife's", [7, 11]))]
    label = lab.label(names)["label"]
    assert label.startswith("first piece of a name split into tokens: [Quir]ksville, [Pre]ttejohn"), label
    same = [{"text": t, "span": s} for t, s in (("the Azkaban prison", [3, 6]), ("Azmat Begg said", [0, 2]), ("an Azure sky", [2, 5]))]
    assert lab.label(same)["label"] == '"az" (name start)'


def test_a_dictionary_concept_yields_where_the_strongest_examples_share_a_form():
    """On the demo index the dictionary's concept "loan" fired on "[Quir]ksville" and "Mike
    [Pre]ttejohn": the index's own form label replaces it; on loans it stays."""
    from indexer.labels.dictionary.localise import dictionary_agrees

    names = [{"text": t, "span": s} for t, s in (("was called Quirksville.", [10, 15]), ("Mike Prettejohn, Netcraft", [4, 8]),
                                                 ("some of Metlife's", [7, 11]))]
    loan = {"label": "loan", "kind": "concept"}
    assert not dictionary_agrees(loan, names)
    assert dictionary_agrees(loan, [{"text": "a loan from the bank", "span": [1, 6]}] * 3)
    listed = {"label": 'tokens "quir" / "pre" / "met"', "kind": "lexical", "token": "quir"}  # a list names no one thing
    assert not dictionary_agrees(listed, names)


def _payload(text: str, fires: list[int]) -> dict:
    """A stored document as label quality reads it: text, token offsets (one per word), firing latents."""
    import re as _re

    from indexer.encode.pooling import pack

    offs = [[m.start(), m.end()] for m in _re.finditer(r"\S+", text)]
    return {"text": text, "_offsets": pack(offs), "_fires": pack([[l, 0] for l in sorted(fires)])}


def test_label_quality_is_a_held_out_detector_auc_against_documents_the_latent_is_absent_from():
    """(1 + TPR - FPR) / 2: the detector "the window holds the token" on held-out activating
    windows, against background windows of documents where the latent does not fire."""
    from indexer.labels.quality import Background, Detector, held_out_quality

    # background: "steve" in 2 of 4 documents, but one of those two is a document latent 7 fires in
    bg = Background([_payload("steve", [7]), _payload("steve", [3]), _payload("cat", [3]), _payload("dog", [3])])
    steve = Detector(tokens=("steve",))
    assert bg.false_positive_rate(steve, 7) == 1 / 3  # the firing document is no negative
    assert bg.false_positive_rate(steve, 3) == 1.0  # fires in three of four: one negative, which holds "steve"
    held = [{("tok", "steve")}, {("tok", "steve")}, {("tok", "problems")}]
    assert held_out_quality(steve, held, bg, 7) == round(0.5 * (1 + 2 / 3 - 1 / 3), 3)
    assert held_out_quality(Detector(tokens=("zebra",)), held, bg, 7) == 0.5  # never fires: chance
    assert held_out_quality(None, held, bg, 7) is None


def test_offline_labels_get_a_held_out_quality_and_duplicate_passages_count_once(tmp_path, monkeypatch):
    """Every offline-labelled latent gets a score in [0, 1], and a passage stored in two
    documents is one example (the BBC corpus has duplicate articles)."""
    from indexer.labels.quality import Background, Detector
    from indexer.labels.offline import OfflineLabeller
    from indexer.labels.examples import distinct_examples

    docs = {r: _payload(f"the club signed Steve Bruce today number {r}", [5]) for r in range(8)}
    docs.update({100 + r: _payload(f"a quiet day for weather {r}", []) for r in range(6)})
    examples = [{"text": docs[r]["text"], "span": [15, 21], "doc_span": [15, 21]} for r in range(8)]
    lab = OfflineLabeller([d["text"] for d in docs.values()])
    assert lab.label(examples[0::2])["detector"] == {"tokens": ["steve"]}  # plain JSON, like the rest of a label
    assert Detector.from_dict({"form": "name_start"}) == Detector(form="name_start") and Detector.from_dict(None) is None
    q = lab.held_out_qualities([(5, examples)], {5: list(range(8))}, docs, [docs[100 + r] for r in range(6)])
    assert q == {5: 1.0}  # every held-out window holds "steve", no background window does
    assert Background([]).false_positive_rate(Detector(tokens=("x",)), 1) is None
    same = {"text": "Microsoft [recommended] users", "span": [10, 23]}
    other = {"text": "is being [recommended] for karaoke", "span": [9, 22]}
    assert distinct_examples([same, dict(same), other], [1, 2, 3], 20) == ([same, other], [1, 3])
    assert distinct_examples([same, other], [1, 3], 1) == ([same], [1])


def test_free_text_labels_are_scored_by_embedding_auc_on_held_out_windows():
    """An LLM's label names no token: it is scored by how much closer its embedding is to windows
    around held-out firing tokens than to windows of documents the latent is absent from."""
    from indexer.encode.embedder import get_embedder
    from indexer.labels.quality import embedding_qualities

    emb = get_embedder()
    held_out = ["the striker scored a late goal", "the keeper saved a penalty kick", "fans cheered the winning goal",
                "the referee showed a red card"]
    background = [(t, set()) for t in ("simmer the onions in butter", "bake the bread for an hour", "whisk two eggs with sugar",
                                       "season the soup with salt")]
    background.append(("the midfielder passed to the winger", {7}))  # latent 7 fires here: no negative for it
    football, cooking = emb.encode(["football match", "cooking a recipe"])
    q = embedding_qualities([(7, football, held_out), (8, cooking, held_out), (9, football, held_out[:3])], background, emb)
    assert q[7] == 1.0 and q[8] < 0.2
    assert 9 not in q  # three held-out windows say too little


def test_a_dictionary_concept_label_is_checked_against_this_indexs_own_top_examples():
    """On the demo index the dictionary's "Hawaii" fired on "[Quir]ky" and "[dram]atisations":
    a concept label whose embedding ranks the index's own firing windows below background windows
    (AUC < 0.5) names something else here, and yields to the index's own label."""
    from types import SimpleNamespace

    import numpy as np

    from indexer.encode.embedder import get_embedder
    from indexer.labels.dictionary.localise import CONCEPT_HERE_MIN_AUC, concept_qualities_here
    from indexer.labels.windows import WindowCache

    emb = get_embedder()
    goals = ["the striker scored a late goal", "the keeper saved a penalty kick", "fans cheered the winning goal",
             "the referee showed a red card", "the winger crossed for a header"]
    examples = [{"doc_id": f"d{i}", "text": t, "span": [4, 11], "doc_span": [4, 11]} for i, t in enumerate(goals)]
    background = [_payload(t, []) for t in ("simmer the onions in butter", "bake the bread for an hour",
                                            "whisk two eggs with sugar", "season the soup with salt", "chop the garlic finely")]
    vecs = np.zeros((3, emb.dim), np.float16)
    vecs[1], vecs[2] = emb.encode(["football match", "cooking a recipe"])
    q = concept_qualities_here({1: examples, 2: examples}, SimpleNamespace(label_vecs=vecs), background, emb, False,
                              WindowCache(None))
    assert q[1] >= CONCEPT_HERE_MIN_AUC > q[2]


def test_latent_quantiles_in_one_pass_equal_numpys_per_group():
    """The statistics' vectorised quantiles are NumPy's, bit for bit, for groups of any size."""
    import numpy as np

    from indexer.store.latent_stats import grouped_quantiles

    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 60, size=300)
    groups = [np.sort(rng.random(n).astype(np.float32) * 8)[::-1] for n in sizes]  # strongest first, as stored
    ends = np.cumsum(sizes)
    for q in (0.5, 0.9, 0.99):
        got = grouped_quantiles(np.concatenate(groups), ends - sizes, ends, q)
        assert got.tolist() == [float(np.quantile(g, q)) for g in groups], q


def test_window_keys_of_a_document_are_its_tokens_and_forms_however_often_asked():
    import numpy as np

    from indexer.labels.forms import forms_of
    from indexer.labels.quality import DocumentWindows, token_text

    text = "Mike Prettejohn was called Quirksville in 1980 by the BBC."
    offsets = np.array([[0, 4], [4, 8], [8, 15], [15, 19], [19, 26], [26, 31], [31, 38], [38, 41], [41, 46], [46, 49],
                        [49, 53], [53, 57], [57, 58]], np.int32)
    doc = DocumentWindows(text, offsets)
    for center, width in (((4, 8), 10), ((26, 31), 5), ((41, 46), 90), ((26, 31), 5)):
        near = [(s, e) for s, e in offsets.tolist() if e > center[0] - width and s < center[1] + width]
        want = {("tok", token_text(text, t)) for t in near} | {("form", f) for t in near for f in forms_of(text, t)}
        assert doc.keys(center, width) == want
    assert {("tok", "pre"), ("form", "name_start")} <= doc.keys((4, 8), 0)
    assert ("tok", "mike") not in doc.keys((41, 46), 5)


def test_the_dense_reader_copy_appears_whole_or_not_at_all(tmp_path):
    """The GGUF reader's dense copy is staged beside its folder and renamed in: a second writer
    (another test worker, a second server) that loses the race leaves the winner's copy as it was."""
    from pathlib import Path

    from indexer.encode.reader import _save_dense_copy

    class Part:
        def __init__(self, name: str, body: str):
            self.name, self.body = name, body

        def save_pretrained(self, folder) -> None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / self.name).write_text(self.body)

    target = tmp_path / "models" / "gemma3-270m"
    _save_dense_copy(Part("config.json", "first"), Part("tokenizer.json", "t"), target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "tokenizer.json"]
    _save_dense_copy(Part("config.json", "second"), Part("tokenizer.json", "t"), target)
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["gemma3-270m"]  # no staging folder left behind
