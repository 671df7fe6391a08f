"""Search parameters, declared once for the CLI, the API and the library (see :mod:`indexer.core.params`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from indexer.core.params import Params, Where

METHODS = ("sae", "bm25", "dense", "hybrid")
MAX_K = 10_000
MAX_QUERY_CHARS = 2000
# The sae method's term for the query's meaning read through the concept latents' decoder rows, as a
# share of the label-matched latents' weight; chosen on half the dev queries (search/meaning.py).
MEANING_WEIGHT = 0.25


class SearchParams(Params):
    query: Optional[str] = Field(None, max_length=MAX_QUERY_CHARS, json_schema_extra={"cli": "argument"},
                                 description="The property to search for, e.g. 'sarcastic remark'.")
    k: int = Field(10, ge=1, le=MAX_K, description=f"Number of results (1..{MAX_K})." )
    offset: int = Field(0, ge=0, le=MAX_K - 1, description=f"Skip this many results (pagination; offset + k <= {MAX_K}).")
    method: Literal["sae", "bm25", "dense", "hybrid"] = Field("sae", description="sae | bm25 | dense | hybrid")
    where: Where = Field(default_factory=dict, description="key=value payload filter; repeatable (same key = any of).")
    rerank: bool = Field(False, description="LLM reranks the top 50.")
    expand: int = Field(0, ge=0, le=20, description="LLM writes N example phrases whose latents join the query.")
    like: Optional[str] = Field(None, min_length=1, max_length=512,
                                description="Rank documents sharing this document's strongest latents.")
    temperature: float = Field(0.2, gt=0, le=100, allow_inf_nan=False, description="Rank-weight temperature T in w=exp(-(r/n)/T).")
    n_latents: int = Field(100, ge=1, le=1000, description="Latents taken per query.")
    llm_filter: bool = Field(False, description="LLM keeps only the relevant latents.")
    family: Literal["all", "token", "concept"] = Field("all", description=(
        "Rank by latents of this SAE family only: token (words, forms, fixed phrases) | concept (what sentences say) | all."))
    view: Literal["response", "prompt"] = Field("response", description=(
        "Rank by the latents of each record's response (its text) | prompt (records indexed with --prompt-field)."))
    length_neutral: bool = Field(False, description=(
        "Method sae: rank by how much more of the query's latents a document has than the index's documents "
        "of its length have (long texts stop ranking first for length alone; off where length is the property)."))
    meaning_weight: float = Field(MEANING_WEIGHT, ge=0, le=10, allow_inf_nan=False, description=(
        "Method sae: weight of the query's own meaning, read through the concept latents' directions "
        "(latents pointing along the query lift a document, those pointing away lower it); 0 = labels only. "
        "The other methods ignore it."))
    feedback: int = Field(12, ge=0, le=200, description=(
        "Pseudo-relevance feedback (methods sae, hybrid): add the latents enriched in the top N "
        "results of a first pass (0 = off)."))

    @property
    def uses_llm(self) -> bool:
        """Whether this search calls an LLM."""
        return bool(self.rerank or self.expand or self.llm_filter)

    @property
    def slow(self) -> bool:
        """Whether this search may take seconds: an LLM step waits on its endpoint, a
        length-neutral ranking reads the whole filtered slice. The server runs these on a pool of
        their own, so that they never hold the threads plain searches wait for."""
        return self.uses_llm or self.length_neutral

    @model_validator(mode="after")
    def _consistent(self):
        if self.offset + self.k > MAX_K:
            raise ValueError(f"offset must be >= 0 with offset + k <= {MAX_K}, got offset {self.offset}")
        if self.like is not None and self.method != "sae":
            raise ValueError("--like works with method sae")
        if self.length_neutral and self.method != "sae":
            raise ValueError("--length-neutral works with method sae")
        if self.view != "response" and self.method != "sae":
            raise ValueError("--view prompt works with method sae (BM25 and the dense vector read the responses)")
        return self
