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
# The prompt view of a two-view record (prompt -> response): its text, firing spans and length.
# The record's ``text`` is its response (the one view of a single-view record).
PROMPT_TEXT, PROMPT_FIRES, PROMPT_OFFSETS, PROMPT_UNITS = "_prompt", "_prompt_fires", "_prompt_offsets", "_prompt_units"
PROMPT_TOKENS = "prompt_tokens"  # tokens the reader read of the prompt (absent: a single-view record)
HAS_PROMPT = "has_prompt"  # True on two-view records (absent otherwise): what a prompt-view analysis keeps
VIEWS = ("response", "prompt")  # the views of a record, in the order vectors are named below
VECTOR_OF = {"response": "sae", "prompt": "sae_prompt"}  # each view's named sparse vector in Qdrant
# each view's payload keys for (text, fires, offsets, units, length)
VIEW_KEYS = {"response": (TEXT, FIRES, OFFSETS, UNITS, "n_tokens"),
             "prompt": (PROMPT_TEXT, PROMPT_FIRES, PROMPT_OFFSETS, PROMPT_UNITS, PROMPT_TOKENS)}
SPANS_OF = {view: keys[1:4] for view, keys in VIEW_KEYS.items()}  # each view's (fires, offsets, units) keys
FIRING = (FIRES, OFFSETS, UNITS, PROMPT_FIRES, PROMPT_OFFSETS, PROMPT_UNITS)  # where each latent fires: most of a document's payload bytes, left out of search hits
DENSE = "_dense"  # the dense vector, put into the payload by scroll_docs(with_dense=True)
BOOKKEEPING = ("n_tokens", "truncated", "content_hash", PROMPT_TOKENS, HAS_PROMPT)

# Parquet columns that are not payload; a two-view record's prompt travels as ``prompt`` (its text)
# with ``prompt_latents`` / ``prompt_values`` (its vector) and its own span columns
PARQUET_PROMPT = ("prompt", "prompt_latents", "prompt_values")
PARQUET_CORE = frozenset({"id", DATASET, TEXT, "latents", "values", "dense", *PARQUET_PROMPT})
# A user field of these names is renamed: saedex's own payload, and the interchange columns (a
# record's own ``id`` field, kept when ids are content hashes, met the ``id`` column in an export)
RESERVED = frozenset({DOC_ID, TEXT, DATASET, *FIRING, PROMPT_TEXT, *BOOKKEEPING, *PARQUET_CORE})
USER_FIELD_PREFIX = "field_"
HIDDEN = frozenset({*FIRING, PROMPT_TEXT, DOC_ID, TEXT, DATASET})  # not among a hit's "fields" (shown elsewhere or internal)
NOT_COPIED = frozenset({TEXT, PROMPT_TEXT, *FIRING, DENSE})  # payload that analyses never filter or count on


def user_field(name: str) -> str:
    """The payload name of a user's field: renamed where it would collide with saedex's own."""
    return USER_FIELD_PREFIX + name if name in RESERVED else name


def view_text_payload(payload: dict, view: str) -> dict:
    """A document's payload with one view as its text: a prompt shown where any text is read
    (examples, label windows), its firing spans and length in the text's places - and stored so in
    the prompt view's columnar copy (its ``n_tokens`` is the prompt's: length-matched analyses of
    prompts compare prompt lengths)."""
    if view == "response":
        return payload
    src, dst = VIEW_KEYS["prompt"], VIEW_KEYS["response"]
    return {**{k: v for k, v in payload.items() if k not in dst}, **{d: payload[s] for s, d in zip(src, dst) if s in payload}}
