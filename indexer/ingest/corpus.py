"""Read corpora (JSONL, JSONL.gz, CSV, Parquet, a folder of .txt) into uniform records.

Every record is ``Record(id, text, fields)``. Bad input never produces a traceback or silent
loss: a broken line raises :class:`CorpusError` naming ``FILE:LINE`` and the reason, or, with
``skip_invalid=True``, is skipped and counted in :class:`ReadStats`. Empty texts are always skipped
and counted. Non-UTF-8 bytes raise an error naming the file and byte offset.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from indexer.core.errors import InputError
from indexer.core.filters import INT64, canonical_number, is_encodable


class CorpusError(InputError):
    """Input that cannot be read; the message names the file and the record."""


@dataclass
class Record:
    id: str
    text: str
    fields: dict[str, Any]
    where: str = ""  # FILE:LINE (or the file of a folder) it came from, for reports
    prompt: str | None = None  # the prompt this text answers (a two-view record); None: one view

    @property
    def content_hash(self) -> str:
        """What says whether a stored record changed: its text, and its prompt where it has one."""
        return record_hash(self.text, self.prompt)


@dataclass
class ReadStats:
    read: int = 0
    empty: int = 0
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)
    ids_normalised: int = 0  # integer ids stored as their decimal string

    def as_dict(self) -> dict:
        return {"read": self.read, "empty": self.empty, "invalid": self.invalid, "ids_normalised": self.ids_normalised}


def content_id(text: str) -> str:
    """Default document id: a content hash, so re-indexing the same text is idempotent."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


PROMPT_SEPARATOR = "\x1e"  # ASCII record separator: between a prompt and its response in a two-view record's hash


def record_hash(text: str, prompt: str | None = None) -> str:
    """A record's content hash (and default id): of its text, or of its prompt and response together
    (the same response to another prompt is another record)."""
    return content_id(text if prompt is None else prompt + PROMPT_SEPARATOR + text)


def _check_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark (Excel, Notepad) is accepted
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 at byte offset {e.start} ({e.reason})") from None


def _iter_text_lines(path: Path) -> Iterator[tuple[int, str | CorpusError]]:
    """Yield (line number, line) of a possibly gzipped text file, checking UTF-8 with offsets.

    A line that is not UTF-8 is yielded as a :class:`CorpusError` (so ``--skip-invalid`` can skip
    it); a file that cannot be read at all (corrupt or truncated gzip) raises one.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw, offset = raw[3:], 3  # UTF-8 byte-order mark
                try:
                    line: str | CorpusError = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    line = CorpusError(f"{path}:{lineno}: not UTF-8 at byte offset {offset + e.start} ({e.reason})")
                offset += len(raw)
                yield lineno, line
    except (OSError, EOFError, zlib.error) as e:
        raise CorpusError(f"{path}: cannot read ({'corrupt or truncated gzip: ' if path.suffix == '.gz' else ''}{e})") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    for lineno, line in _iter_text_lines(path):
        if isinstance(line, CorpusError):
            yield f"{path}:{lineno}", line
            continue
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield where, CorpusError(f"{where}: invalid JSON ({e.msg} at column {e.colno})")
            continue
        except RecursionError:
            yield where, CorpusError(f"{where}: JSON nested too deeply")
            continue
        if not isinstance(obj, dict):
            yield where, CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        yield where, obj


CSV_FIELD_LIMIT = 64 * 1024 * 1024  # whole documents: Python's default 128 KiB is one long article


def _iter_csv(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file with a header. ``strict``: an unclosed quote is an error (not every
    following row swallowed into one field); a row with more fields than the header is an
    error naming its line (it was stored under a field named ``None``)."""
    text = _check_utf8(path, path.read_bytes())
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        reader.fieldnames  # the header, so line numbers below are the rows'
    except csv.Error as e:
        raise CorpusError(f"{path}:1: invalid CSV header ({e})") from None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise CorpusError(f"{path}:{start}: invalid CSV ({e}; an unclosed quote?)") from None
        where = f"{path}:{reader.line_num}"
        if None in row:
            n = len(reader.fieldnames or [])
            yield where, CorpusError(f"{where}: {n + len(row[None])} fields but the header names {n}")
            continue
        yield where, dict(row)


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for broken files
        raise CorpusError(f"{path}: not a readable Parquet file ({e})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", obj


def _iter_txt_folder(path: Path, follow_symlinks: bool = False) -> Iterator[tuple[str, Any]]:
    """Each .txt file is a document; its id is the relative path, its sub-folder a field.

    A symlink pointing outside the folder is not followed unless asked (a link to
    ``/etc/shadow`` would be indexed and served to every search key), and what is not a regular
    file (a FIFO blocks forever, ``/dev/zero`` never ends) is refused; both are invalid records
    naming the file."""
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise CorpusError(f"{path}: folder has no .txt files")
    root = path.resolve()
    for f in files:
        rel = f.relative_to(path)
        if f.is_symlink() and not follow_symlinks and not f.resolve().is_relative_to(root):
            yield str(f), CorpusError(f"{f}: a symlink out of the folder (not followed; --follow-symlinks allows it)")
            continue
        if not f.is_file():
            yield str(f), CorpusError(f"{f}: not a regular file (a FIFO, device or folder)")
            continue
        try:
            text = _check_utf8(f, f.read_bytes())
        except CorpusError as e:
            yield str(f), e
            continue
        yield str(f), {"text": text, "id": str(rel), "folder": str(rel.parent) if str(rel.parent) != "." else ""}


def _raw_records(path: Path, follow_symlinks: bool = False) -> Iterator[tuple[str, Any]]:
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if path.is_dir():
        return _iter_txt_folder(path, follow_symlinks)
    if not path.is_file():
        raise CorpusError(f"{path}: not a regular file (a FIFO or device cannot be indexed)")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".jsonl.gzip")):
        return _iter_jsonl(path)
    if name.endswith(".csv"):
        return _iter_csv(path)
    if name.endswith(".parquet"):
        return _iter_parquet(path)
    if name.endswith(".txt"):
        return iter([(str(path), {"text": _check_utf8(path, path.read_bytes()), "id": path.name})])
    raise CorpusError(f"{path}: unknown format (use .jsonl, .jsonl.gz, .csv, .parquet, .txt or a folder of .txt)")


def read_corpus(
    path: str | Path,
    text_field: str = "text",
    id_field: str | None = None,
    skip_invalid: bool = False,
    stats: ReadStats | None = None,
    follow_symlinks: bool = False,
    prompt_field: str | None = None,
) -> Iterator[Record]:
    """Yield records of a corpus file; see the module docstring for the error policy. Each
    record is validated completely (text, id and every field) before it is yielded, so a record
    that would fail in the encoder or the store fails here, as one line naming it. With
    ``prompt_field``, a record whose field holds a non-empty string is a two-view record (that
    prompt, and the text as its response); a record without it stays single-view."""
    if prompt_field is not None and prompt_field == text_field:
        raise CorpusError(f"--prompt-field and --text-field are both {text_field!r}: a prompt is another field than its response")
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    for where, obj in _raw_records(path, follow_symlinks):
        problem: str | None = None
        if isinstance(obj, CorpusError):
            problem = str(obj)
        elif text_field not in obj:
            problem = f"{where}: missing text field {text_field!r} (fields: {', '.join(map(str, obj)) or 'none'})"
        elif obj[text_field] is not None and not isinstance(obj[text_field], str):
            problem = f"{where}: field {text_field!r} must be a string, got {type(obj[text_field]).__name__}"
        elif prompt_field and obj.get(prompt_field) is not None and not isinstance(obj[prompt_field], str):
            problem = f"{where}: prompt field {prompt_field!r} must be a string, got {type(obj[prompt_field]).__name__}"
        elif id_field and (obj.get(id_field) is None or str(obj.get(id_field)) == ""):
            problem = f"{where}: missing id field {id_field!r}"
        elif id_field and not _valid_id_type(obj[id_field]):
            problem = (f"{where}: id field {id_field!r} must be a string or an integer, "
                       f"got {type(obj[id_field]).__name__} {obj[id_field]!r}")
        else:
            problem = _field_problem(where, obj)
        if problem:
            if not skip_invalid:
                raise CorpusError(problem)
            stats.invalid += 1
            if len(stats.invalid_examples) < 5:
                stats.invalid_examples.append(problem)
            continue
        text = obj[text_field] or ""
        if not text.strip():
            stats.empty += 1
            continue
        prompt = obj.get(prompt_field) if prompt_field else None
        prompt = prompt if isinstance(prompt, str) and prompt.strip() else None
        if id_field:
            raw_id = obj[id_field]
            if not isinstance(raw_id, str):
                stats.ids_normalised += 1  # an integer: stored as its decimal string ("1" and 1 are one id)
            doc_id = str(raw_id)
        else:
            doc_id = str(obj["id"]) if path.is_dir() else record_hash(text, prompt)
        fields = {k: v for k, v in obj.items() if k not in (text_field, prompt_field) and k != id_field}
        stats.read += 1
        yield Record(id=doc_id, text=text, fields={k: canonical_number(v) for k, v in _jsonable(fields).items()}, where=where,
                     prompt=prompt)


MAX_FIELD_DEPTH = 32  # nesting of lists / objects in one field value


def _field_problem(where: str, obj: dict) -> str | None:
    """The first value of a record that the store cannot hold faithfully, as a message naming
    the record and the field: a lone surrogate (JSON ``"\\ud800"``: not UTF-8), ``NaN`` or
    ``Infinity``, an integer past 64 bits (Qdrant would keep it as a float, silently changed),
    or nesting deeper than :data:`MAX_FIELD_DEPTH`."""
    def walk(v: Any, name: str, depth: int) -> str | None:
        if depth > MAX_FIELD_DEPTH:
            return f"field {name!r} is nested deeper than {MAX_FIELD_DEPTH} levels"
        if isinstance(v, str):
            return None if is_encodable(v) else f"field {name!r} holds a lone surrogate (not valid Unicode)"
        if isinstance(v, bool) or v is None:
            return None
        if isinstance(v, int):
            return None if INT64[0] <= v <= INT64[1] else f"field {name!r}: integer {v} does not fit 64 bits"
        if isinstance(v, float):
            return None if math.isfinite(v) else f"field {name!r}: {v} is not a finite number"
        if isinstance(v, list):
            for x in v:
                if (p := walk(x, name, depth + 1)) is not None:
                    return p
            return None
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and not is_encodable(k):
                    return f"field {name!r} has a key with a lone surrogate"
                if (p := walk(x, name, depth + 1)) is not None:
                    return p
        return None

    for key, value in obj.items():
        if isinstance(key, str) and not is_encodable(key):
            return f"{where}: a field name holds a lone surrogate (not valid Unicode)"
        problem = walk(value, str(key), 0)
        if problem is not None:
            return f"{where}: {problem}"
    return None


def _valid_id_type(value: Any) -> bool:
    """Ids are strings as given; integers are accepted as their decimal string. Booleans and floats
    are refused: ``true`` -> "True" or ``1.0`` -> "1.0" would silently not match the user's ids."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _jsonable(fields: dict) -> dict:
    """Payload must be JSON: stringify what is not (timestamps from Parquet, bytes...)."""
    out = {}
    for k, v in fields.items():
        if v is None or isinstance(v, (str, int, float, bool)):
            out[str(k)] = v
        elif isinstance(v, (list, dict)):
            try:
                json.dumps(v)
                out[str(k)] = v
            except TypeError:
                out[str(k)] = str(v)
        else:
            out[str(k)] = str(v)
    return out
