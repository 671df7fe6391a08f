"""Analysis parameters, declared once for the CLI, the API and the library (see :mod:`indexer.core.params`).

Each model's bounds are the analysis's cost bounds: every caller (CLI, API, library) hits the
same ones with the same one-line message.
"""

from __future__ import annotations

import typing
from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from indexer.core.params import Params, Where
from indexer.encode.floor import DEFAULT_FLOOR, MAX_FLOOR

MAX_SLICES = 32  # B slices of one diff (each is a pass over the copy unless answered from stored counts)
FLOOR_HELP = ("Count a latent in a document only where it fires at >= this x its typical strength "
              "(the SAE's median pooled activation; 0 = any non-zero).")
Floor = Field(DEFAULT_FLOOR, ge=0, le=MAX_FLOOR, description=FLOOR_HELP)
Family = Literal["all", "token", "concept"]
FAMILY_HELP = "Latents of this SAE family only: token (words, forms, fixed phrases) | concept (what sentences say) | all."
View = Literal["response", "prompt"]
VIEW_HELP = ("Which text of a record: response (its text; every record has one) | prompt (records indexed with "
             "--prompt-field).")
ViewField = Field("response", description=VIEW_HELP)


class DiffParams(Params):
    a: Where = Field(..., min_length=1, description="Filter for slice A: key=value, repeatable (different keys: all hold; "
                                                    "the same key: any of its values).")
    b: Union[Where, typing.Annotated[list[Where], Field(min_length=1, max_length=MAX_SLICES)]] = Field(
        ..., description="Filter for slice B, as --a; with --multi each --b is a slice of its own, and A is compared "
                         "with the max of them.")
    top: int = Field(20, ge=1, le=1000, description="Latents to report.")
    threshold: float = Field(0.0, ge=0, le=1e6, description="A document has a latent when its max activation exceeds this.")
    floor: float = Floor
    family: Family = Field("all", description=FAMILY_HELP)
    min_coverage: float = Field(0.005, ge=0, le=1, description="Skip latents in fewer than this fraction of both slices.")
    max_coverage: float = Field(0.95, ge=0, le=1, description="Skip latents in more than this fraction of both slices.")
    hypotheses: int = Field(0, ge=0, le=10, description="LLM merges top latents into N verified hypotheses.")
    length: Literal["stratified", "none"] = Field(
        "stratified", description="stratified: compare documents of similar length (longer texts have more latents); "
                                  "none: raw frequencies.")
    view: View = ViewField

    def b_slices(self) -> list[dict]:
        return self.b if isinstance(self.b, list) else [self.b]

    @model_validator(mode="after")
    def _coverage_window(self):
        if self.min_coverage > self.max_coverage:
            raise ValueError(f"min_coverage ({self.min_coverage}) is above max_coverage ({self.max_coverage}): no latent could pass")
        return self


class CorrelationsParams(Params):
    where: Where = Field(default_factory=dict, description="key=value filter; repeatable (same key = any of).")
    min_npmi: float = Field(0.3, ge=-1, le=1, description="Report pairs with at least this NPMI.")
    max_label_sim: float = Field(0.2, ge=-1, le=1, description="Drop pairs whose labels are more similar than this (two concept latents: a little more, CONCEPT_PAIR_SIM_OFFSET: their short labels sit closer at random).")
    min_support: int = Field(5, ge=1, le=1_000_000, description="Documents a pair must share.")
    max_freq: float = Field(0.5, gt=0, le=1, description="Skip latents present in more than this fraction of documents.")
    per_doc: int = Field(512, ge=0, le=4096, description="Keep each document's N most salient latents (0 = all; cost grows with N^2).")
    max_docs: int = Field(4000, ge=0, le=10_000_000,
                          description="Sample this many documents from larger slices (seeded); 0 = exact, every document.")
    floor: float = Floor
    family: Family = Field("all", description=FAMILY_HELP)
    top: int = Field(20, ge=1, le=1000, description="Pairs to report.")
    min_quality: float = Field(0.0, ge=0, le=1, description="Skip pairs with a label scoring below this (label quality; "
                                                              "unscored labels pass).")
    per_latent: bool = Field(False, description="Count each concept latent apart (default: concept latents that "
                                                "share a label count as one concept; a concept SAE can split one over several).")
    between: str = Field("response,response", pattern=r"^(prompt|response),(prompt|response)$",
                         description="Views the pair's latents come from: response,response (co-occurrence within texts) | "
                                     "prompt,response (a prompt latent and a response latent of the same record) | "
                                     "prompt,prompt | response,prompt.")

    def views(self) -> tuple[str, str]:
        a, b = self.between.split(",")
        return a, b


class ClusterParams(Params):
    where: Where = Field(default_factory=dict, description="key=value filter; repeatable (same key = any of).")
    k: int = Field(5, ge=2, le=100, description="Number of clusters.")
    axis: Optional[str] = Field(None, min_length=1, max_length=500,
                                description="Cluster along this axis: 'news topic', 'tone', 'A vs B'.")
    method: Literal["sae", "dense"] = Field("sae", description="sae | dense")
    family: Family = Field("all", description=FAMILY_HELP)
    label_field: Optional[str] = Field(None, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
                                       description="Score clusters against this payload field.")
    view: View = ViewField
