"""The analyses as one table of operations: name, parameter model, library function, role and the
filters to check before a job is queued. The API registers one job route per row
(``POST /v1/indexes/NAME/<route>``); the CLI's commands take the same models and functions.
(datasette builds its CLI and server from one table the same way.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analyses.clustering import cluster
from analyses.correlations import correlations
from analyses.diff import diff
from analyses.params import ClusterParams, CorrelationsParams, DiffParams
from indexer.core.params import Params
from indexer.store import Store


@dataclass(frozen=True)
class Operation:
    route: str  # the API path segment and the job's kind
    params: type[Params]
    run: Callable[[Store, str, Params], dict]
    filters: Callable[[Params], list[tuple[dict, str]]]  # (filter, its name) of each slice the call reads
    role: str = "analyses"


ANALYSES: tuple[Operation, ...] = (
    Operation("diff", DiffParams, diff, lambda p: [(p.a, "a"), *((b, "b") for b in p.b_slices())]),
    Operation("correlations", CorrelationsParams, correlations, lambda p: [(p.where, "where")]),
    Operation("clusters", ClusterParams, cluster, lambda p: [(p.where, "where")]),
)
