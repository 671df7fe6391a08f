"""What a document's payload holds, written once: the fields saedex writes beside a user's own.

Every document point carries the user's fields plus these. Ingest renames a user field that
collides with one (``text`` -> ``field_text``); search shows the user's fields without the internal
ones; the columnar copy leaves out what analyses never filter or count on; Parquet export writes
the core fields as columns of their own.
"""

from __future__ import annotations

DOC_ID, TEXT, DATASET = "doc_id", "text", "dataset"
FIRES, OFFSETS = "_fires", "_offsets"  # packed (latent, peak token) pairs and token character spans
UNITS = "_units"  # packed character spans of the sentence units (the concept family's peaks point here)
FIRING = (FIRES, OFFSETS, UNITS)  # where each latent fires: most of a document's payload bytes, left out of search hits
DENSE = "_dense"  # the dense vector, put into the payload by scroll_docs(with_dense=True)
BOOKKEEPING = ("n_tokens", "truncated", "content_hash")

RESERVED = frozenset({DOC_ID, TEXT, DATASET, FIRES, OFFSETS, UNITS, *BOOKKEEPING})  # a user field of these names is renamed
USER_FIELD_PREFIX = "field_"
HIDDEN = frozenset({FIRES, OFFSETS, UNITS, DOC_ID, TEXT, DATASET})  # not among a hit's "fields" (shown elsewhere or internal)
NOT_COPIED = frozenset({TEXT, FIRES, OFFSETS, UNITS, DENSE})  # payload that analyses never filter or count on
PARQUET_CORE = frozenset({"id", DATASET, TEXT, "latents", "values", "dense"})  # Parquet columns that are not payload


def user_field(name: str) -> str:
    """The payload name of a user's field: renamed where it would collide with saedex's own."""
    return USER_FIELD_PREFIX + name if name in RESERVED else name
