"""Dynamic tools: Python callables the model can call through Keel."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from keel.v1 import session_pb2

ToolFn = Callable[..., Any]

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


@dataclass(frozen=True)
class Tool:
    """A client-implemented tool: ``fn`` is called with the model's JSON
    arguments as keyword arguments, and what it returns is the output the
    model sees (a ``str`` as is, anything else as JSON). An exception is
    reported to the model as a failed call carrying its message.

    The model sees the tool as ``<namespace>__<name>`` (or ``<name>``).
    """

    fn: ToolFn
    name: str
    description: str = ""
    namespace: str = ""
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def to_proto(self) -> session_pb2.DynamicTool:
        return session_pb2.DynamicTool(
            namespace=self.namespace,
            name=self.name,
            description=self.description,
            input_schema_json=json.dumps(self.schema),
        )

    async def call(self, arguments: str) -> tuple[str, bool]:
        """Runs the tool on the model's JSON ``arguments``: ``(output, success)``.

        A synchronous ``fn`` runs in a worker thread; a coroutine function is
        awaited. Never raises (except on cancellation).
        """
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return (f"invalid JSON arguments: {e}", False)
        if not isinstance(args, dict):
            return (f"arguments must be a JSON object, got {type(args).__name__}", False)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(**args)
            else:
                result = await asyncio.to_thread(self.fn, **args)
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the tool's failure is the model's to see
            return (str(e) or type(e).__name__, False)
        if result is None:
            return ("", True)
        if isinstance(result, str):
            return (result, True)
        try:
            return (json.dumps(result), True)
        except (TypeError, ValueError):
            return (str(result), True)


def _json_type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _json_type(options[0]) if len(options) == 1 else {}
    base = origin or annotation
    return {"type": _JSON_TYPES[base]} if base in _JSON_TYPES else {}


def schema_of(fn: ToolFn) -> dict[str, Any]:
    """A JSON Schema for ``fn``'s parameters, from its signature: each
    parameter a property (typed when annotated ``str``/``int``/``float``/
    ``bool``/``list``/``dict``), required unless it has a default."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        props[p.name] = _json_type(hints.get(p.name, p.annotation))
        if p.default is p.empty:
            required.append(p.name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@overload
def tool(
    fn: ToolFn,
    *,
    name: str | None = ...,
    namespace: str = ...,
    description: str | None = ...,
    schema: dict[str, Any] | None = ...,
) -> Tool: ...


@overload
def tool(
    fn: None = ...,
    *,
    name: str | None = ...,
    namespace: str = ...,
    description: str | None = ...,
    schema: dict[str, Any] | None = ...,
) -> Callable[[ToolFn], Tool]: ...


def tool(
    fn: ToolFn | None = None,
    *,
    name: str | None = None,
    namespace: str = "",
    description: str | None = None,
    schema: dict[str, Any] | None = None,
) -> Tool | Callable[[ToolFn], Tool]:
    """Makes ``fn`` a dynamic tool for :meth:`Keel.create_session`.

    ``name`` defaults to the function's name, ``description`` to its
    docstring, ``schema`` (a JSON Schema object for the arguments) to one
    derived from its signature. Usable as ``tool(fn, ...)`` or as a
    decorator, ``@tool(namespace="crm")``.
    """

    def make(f: ToolFn) -> Tool:
        tool_name = name or str(getattr(f, "__name__", ""))
        if not _NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r}: use letters, digits, '_' and '-'")
        if namespace and not _NAME.match(namespace):
            raise ValueError(f"tool namespace {namespace!r}: use letters, digits, '_' and '-'")
        return Tool(
            fn=f,
            name=tool_name,
            namespace=namespace,
            description=description if description is not None else inspect.getdoc(f) or "",
            schema=schema if schema is not None else schema_of(f),
        )

    return make(fn) if fn is not None else make
