"""Operation parameters, declared once.

Each operation (search, diff, correlations, clusters, latents) has one pydantic model in the
layer that owns it (``search/params.py``, ``analyses/params.py``) giving every parameter its
type, default, bounds and help. The API uses the model as its request body (strict: unknown
fields and wrong JSON types are 422 naming the field); the CLI's typer options are generated
from it (:func:`cli_command`); the library takes it. So a bound or a default cannot differ
between the three, and the CLI's ``--json`` output and the API's response come from the same
function. (datasette builds its CLI, library and server on one core the same way.)

A field's CLI spelling is ``--field-name``; ``json_schema_extra={"cli": ...}`` can name
another flag or ``"argument"`` (positional). A CLI-only choice (``--plot``, ``--llm``,
``--json``) is an ordinary parameter of the command function, not of the model.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from typing import Any, Callable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from indexer.core.errors import InputError
from indexer.core.filters import MAX_FILTER_FIELDS, MAX_FILTER_VALUES, Filter, filter_from_dict, is_encodable, where_dict

# strict: true is not 1, "1" is not 1
FilterValue = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
Where = typing.Annotated[
    dict[str, Union[FilterValue, typing.Annotated[list[FilterValue], Field(min_length=1, max_length=MAX_FILTER_VALUES)]]],
    Field(max_length=MAX_FILTER_FIELDS),
]


class ParamsError(InputError):
    """A parameter out of bounds or of the wrong type (exit 2, HTTP 422); names the parameter."""


class Params(BaseModel):
    """Base of the operation parameter models: unknown fields are errors and JSON types are
    taken literally (``"5"`` and ``true`` are not integers)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """Every string of a request - values, filter keys, list items - is valid Unicode. A JSON
        ``"\\ud800"`` decodes to a lone surrogate, which pydantic lets through inside unions and
        dict keys; stored in a job it later broke every job listing (a 500 for an hour)."""
        where = _lone_surrogate(data, "")
        if where is not None:
            raise ValueError(f"{where or 'body'}: holds a lone surrogate (not valid Unicode text)")
        return data

    @classmethod
    def parse(cls, **values: Any):
        """Build from Python values, turning a validation error into a one-line ParamsError
        that names the parameter as the CLI spells it."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise ParamsError(describe(e, cls)) from None

    @classmethod
    @functools.cache
    def from_query_string(cls) -> type["Params"]:
        """The same model for URL query parameters, where every value arrives as text: numbers
        are parsed (``top=5``), unknown parameters are still errors."""
        return type(cls.__name__ + "Query", (cls,), {"model_config": ConfigDict(extra="forbid", strict=False),
                                                     "__module__": cls.__module__})

    @staticmethod
    def to_filter(where: dict | None, what: str = "where") -> Filter:
        return filter_from_dict(where, what)


def _lone_surrogate(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first string (or key) in ``value`` that is not valid Unicode, else None."""
    if isinstance(value, str):
        return None if is_encodable(value) else path
    if depth > 8:
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and not is_encodable(k):
                return path or "body"
            found = _lone_surrogate(v, sub, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for n, v in enumerate(value):
            found = _lone_surrogate(v, f"{path}.{n}", depth + 1)
            if found is not None:
                return found
    return None


def flag(model: type[BaseModel], name: str) -> str:
    extra = model.model_fields[name].json_schema_extra or {}
    cli = extra.get("cli") if isinstance(extra, dict) else None
    return name if cli == "argument" else (cli or "--" + name.replace("_", "-"))


_UNION_TAG = re.compile(r"^(bool|int|float|str|list\[.*|dict\[.*|function-.*)$")


def clean_loc(loc) -> list:
    """An error location without pydantic's union-member tags (``b.list[dict[...]].3`` -> ``b.3``)."""
    return [p for p in loc if not (isinstance(p, str) and _UNION_TAG.match(p))]


def describe(e: ValidationError, model: type[BaseModel] | None = None) -> str:
    """A validation error in one line, with the parameter's CLI name. Where a value fits no
    member of a union (``b``: one filter or a list of them), the member it came closest to
    speaks: a bound it broke, not "should be a valid dictionary"."""
    errors = e.errors()
    err = next((x for x in errors if not x["type"].endswith("_type")), errors[0])
    loc = [str(p) for p in clean_loc(err.get("loc", ()))]
    if model is not None and loc and loc[0] in model.model_fields:
        where = flag(model, loc[0]) + "".join(f"[{p}]" for p in loc[1:])
    else:
        where = ".".join(loc)
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


# ----------------------------------------------------------------------------- CLI generation

def _cli_annotation(annotation: Any) -> tuple[Any, Callable[[Any, dict], Any] | None]:
    """The type typer shows for a model field, and how to turn what typer parsed into the
    model's value: a ``Where`` (dict) is repeated ``--where key=value`` options."""
    if typing.get_origin(annotation) is dict:  # pydantic keeps a field's bounds apart: a Where is a plain dict here
        return Optional[list[str]], lambda value, cli: where_dict(value)
    return annotation, None


def cli_command(model: type[Params], fixed: dict[str, tuple[Any, Callable[[Any, dict], Any]]] | None = None):
    """Decorate ``fn(params: Model, **cli_only)`` into a typer command whose options are
    ``fn``'s own parameters and the model's fields (flag, default, help). ``fixed`` maps a field
    to (typer annotation, converter) where the CLI spells it differently; a converter gets the
    option's value and all the command's values (``--b`` reads ``--multi``)."""
    fixed = fixed or {}

    def deco(fn: Callable) -> Callable:
        import typer

        hints = typing.get_type_hints(fn)  # the command's own annotations, resolved where it was written
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != "params"]
        params, converters = [], {}
        for name, f in model.model_fields.items():
            annotation, convert = fixed.get(name) or _cli_annotation(f.annotation)
            if convert is not None:
                converters[name] = convert
            default = None if f.default_factory is not None else (... if f.is_required() else f.default)
            if flag(model, name) == name:
                option = typer.Argument(default, help=f.description)
            else:
                option = typer.Option(default, flag(model, name), help=f.description)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))

        @functools.wraps(fn)
        def command(**kwargs):
            cli = dict(kwargs)
            values = {n: kwargs.pop(n) for n in list(kwargs) if n in model.model_fields}
            for n, convert in converters.items():
                if values.get(n) is not None:
                    values[n] = convert(values[n], cli)
            # None is typer's "not given": the model's own default applies (a required field is reported missing)
            return fn(params=model.parse(**{n: v for n, v in values.items() if v is not None}), **kwargs)

        positional = [p for p in params if isinstance(p.default, typer.models.ArgumentInfo)]
        options = [p for p in params if p not in positional]
        signature = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional + own + options]
        command.__signature__ = inspect.Signature(signature)
        command.__annotations__ = {p.name: p.annotation for p in signature}  # typer resolves these
        del command.__wrapped__  # typer reads __signature__, not the wrapped function's
        return command

    return deco
