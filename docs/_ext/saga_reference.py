"""Reference pages generated from the code at build time, so that they cannot drift from it.

A page holds its own prose and, on a line of its own, a marker such as
``<!-- generated: http-aggregator -->``; when Sphinx reads the page, the marker is replaced by
Markdown made from the code:

- ``http-aggregator``, ``http-participant``: the OpenAPI documents the servers serve at
  ``GET /openapi.json`` (:func:`aggregator.openapi.openapi_document`,
  :func:`participants.openapi.openapi_document`), paths, methods, parameters, bodies and answers;
- ``definition``: the workflow-definition keys, from the pydantic models of
  :mod:`aggregator.definition` and :mod:`aggregator.mapping` (types and constraints from their
  JSON schema, defaults, and the fields' docstrings);
- ``cli-aggregator``, ``cli-participants``, ``cli-trip-booking``: the argparse parsers;
- ``metrics-aggregator``, ``metrics-participant``, ``metrics-process``: the Prometheus registries.

A page holding a marker is read again on every build (the code may have changed, not the page).
An unknown marker fails the build.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import ExtensionError
from sphinx.pycode import ModuleAnalyzer

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")


# --- Markdown helpers -----------------------------------------------------------------------


def code(text: object) -> str:
    """An inline code span holding ``text`` as it is (a table cell's ``|`` escaped)."""
    value = str(text)
    fence = "`"
    while fence in value:
        fence += "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}".replace("|", "\\|")


def prose(text: str | None) -> str:
    """A docstring or description as one line of Markdown for a table cell."""
    if not text:
        return ""
    text = " ".join(text.split())
    text = re.sub(r"``([^`]+)``", r"`\1`", text)  # reST literals
    text = re.sub(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc):`~?([^`]+)`", r"`\1`", text)
    return text.replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def label(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)


# --- JSON schema as text --------------------------------------------------------------------

_CONSTRAINTS = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "> {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "< {}",
    "minLength": "length ≥ {}",
    "maxLength": "length ≤ {}",
    "minItems": "≥ {} items",
    "maxItems": "≤ {} items",
}


class SchemaText:
    """Writes JSON schemas as short Markdown, ``$ref`` as links to the page's schema sections."""

    def __init__(self, prefix: str, known: Mapping[str, Any]) -> None:
        self.prefix, self.known = prefix, known

    def ref(self, ref: str) -> str:
        name = ref.rsplit("/", 1)[-1]
        if name not in self.known:
            raise ExtensionError(f"saga_reference: {ref} names no schema of {self.prefix}")
        return f"{{ref}}`{name} <{label(self.prefix, 'schema', name)}>`"

    def type(self, schema: Mapping[str, Any]) -> str:
        if "$ref" in schema:
            return self.ref(schema["$ref"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return " or ".join(self.type(s) for s in schema[key])
        if "const" in schema:
            return code(repr_json(schema["const"]))
        if "enum" in schema:
            return " or ".join(code(repr_json(v)) for v in schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):
            text = " or ".join(kind)
        elif kind == "array":
            text = "array of " + self.type(schema.get("items", {}))
        elif kind == "object" and ("additionalProperties" in schema or "patternProperties" in schema):
            values = schema.get("additionalProperties")
            if not isinstance(values, dict):
                values = next(iter(schema.get("patternProperties", {}).values()), {})
            text = "table of " + (self.type(values) if values else "any")
        elif kind == "object" and schema.get("properties"):
            text = "object with " + ", ".join(code(key) for key in schema["properties"])
        elif kind:
            text = str(kind)
        else:
            text = "any"
        limits = self.constraints(schema)
        return f"{text} ({limits})" if limits else text

    def constraints(self, schema: Mapping[str, Any]) -> str:
        found = [fmt.format(schema[key]) for key, fmt in _CONSTRAINTS.items() if key in schema]
        if "pattern" in schema:
            found.append("matching " + code(schema["pattern"]))
        if "format" in schema:
            found.append(str(schema["format"]))
        return ", ".join(found)


def repr_json(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


# --- HTTP API from OpenAPI ------------------------------------------------------------------


def openapi_markdown(document: Mapping[str, Any], prefix: str) -> str:
    """Every operation of ``document``, then its bodies; labels start with ``prefix``."""
    components = document.get("components", {})
    schemas = components.get("schemas", {})
    text = SchemaText(prefix, schemas)
    out: list[str] = []
    security = components.get("securitySchemes", {})
    used: set[str] = set()
    for path, item in document["paths"].items():
        for method in _METHODS:
            if (operation := item.get(method)) is None:
                continue
            target = label(prefix, method, path)
            if target in used:  # `/ui` beside `/ui/`
                target = label(prefix, method, path, "slash" if path.endswith("/") else "bare")
            used.add(target)
            out.append(f"({target})=")
            out.append(f"### `{method.upper()} {path}`\n")
            out.append(prose(operation.get("summary")) + "\n")
            if operation.get("description"):
                out.append(prose(operation["description"]) + "\n")
            if operation.get("security") and security:
                out.append("Requires `Authorization: Bearer` when authentication is on.\n")
            params = [*item.get("parameters", []), *operation.get("parameters", [])]
            if params:
                rows = []
                for p in params:
                    schema = p.get("schema", {})
                    if "oneOf" in schema and all(s.get("type") == "object" for s in schema["oneOf"]):
                        # One exploded object parameter: list each form's own query parameters.
                        for form in schema["oneOf"]:
                            for name, prop in form.get("properties", {}).items():
                                needed = "yes" if name in form.get("required", []) else ""
                                rows.append(
                                    [
                                        code(name),
                                        f"query ({form.get('title', 'form')})",
                                        needed,
                                        text.type(prop),
                                        prose(prop.get("description")),
                                    ]
                                )
                        continue
                    rows.append(
                        [
                            code(p["name"]),
                            p["in"],
                            "yes" if p.get("required") else "",
                            text.type(schema),
                            prose(p.get("description")),
                        ]
                    )
                out.append("Parameters:\n")
                out.append(table(["name", "in", "required", "type", "description"], rows))
            if body := operation.get("requestBody"):
                for media, content in body.get("content", {}).items():
                    schema = content.get("schema")
                    body_text = text.type(schema) if schema else "any"
                    out.append(f"Request body ({code(media)}): {body_text}.\n")
            rows = []
            for status, answer in sorted(operation.get("responses", {}).items()):
                if "$ref" in answer:
                    answer = components["responses"][answer["$ref"].rsplit("/", 1)[-1]]
                bodies = []
                for media, content in answer.get("content", {}).items():
                    schema = content.get("schema")
                    bodies.append(f"{code(media)}: {text.type(schema)}" if schema else code(media))
                headers = ", ".join(code(h) for h in answer.get("headers", {}))
                if headers:
                    bodies.append("headers " + headers)
                rows.append([status, prose(answer.get("description")), "; ".join(bodies)])
            out.append("Answers:\n")
            out.append(table(["status", "description", "body"], rows))
    if schemas:
        out.append("### Bodies\n")
        for name, schema in schemas.items():
            out.append(f"({label(prefix, 'schema', name)})=")
            out.append(f"#### `{name}`\n")
            if schema.get("description"):
                out.append(prose(schema["description"]) + "\n")
            properties = schema.get("properties")
            if properties:
                required = set(schema.get("required", []))
                rows = [
                    [
                        code(field),
                        text.type(prop),
                        "yes" if field in required else "",
                        prose(prop.get("description")),
                    ]
                    for field, prop in properties.items()
                ]
                out.append(table(["field", "type", "always present", "description"], rows))
            else:
                out.append(f"A value of type {text.type(schema)}.\n")
    return "\n".join(out)


def http_aggregator() -> str:
    from aggregator import load_definition
    from aggregator.openapi import openapi_document

    return openapi_markdown(openapi_document(load_definition(), auth=True), "http-aggregator")


def http_participant() -> str:
    from order_saga.saga import SPECS
    from participants._listing import MAX_PAGE
    from participants.http import MAX_BATCH
    from participants.openapi import openapi_document

    document = openapi_document(
        "order", SPECS["order"].openapi_paths, max_batch=MAX_BATCH, max_page=MAX_PAGE, auth=True
    )
    return openapi_markdown(document, "http-participant")


# --- Workflow definition from the pydantic models -------------------------------------------


def _models_in(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models a field's annotation holds, and how TOML nests them: ``table``, ``map``, ``array``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models_in(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models_in(arg)
    elif origin is dict:
        for kind, model in _models_in(typing.get_args(annotation)[1]):
            yield ("map" if kind == "table" else kind), model
    elif origin is list:
        for kind, model in _models_in(typing.get_args(annotation)[0]):
            yield ("array" if kind == "table" else kind), model
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "table", annotation


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    if isinstance(value, dict | list) and not value:
        return "empty"
    if isinstance(value, bool):
        return code("true" if value else "false")
    return code(repr_json(value))


def definition_markdown() -> str:
    from aggregator.definition import Definition

    docs: dict[tuple[str, str], list[str]] = {}
    for module in ("aggregator.definition", "aggregator.mapping"):
        analyzer = ModuleAnalyzer.for_module(module)
        docs.update(analyzer.find_attr_docs())
    schema = Definition.model_json_schema()
    defs = schema.get("$defs", {})
    text = SchemaText("definition", {})
    out: list[str] = []
    queue: list[tuple[str, type[BaseModel]]] = [("Top level", Definition)]
    seen: set[type[BaseModel]] = set()
    while queue:
        where, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        own = schema if model is Definition else defs[model.__name__]
        out.append(f"({label('definition', model.__name__)})=")
        out.append(f"### {where if where == 'Top level' else code(where)}\n")
        if model.__doc__ and model is not Definition:  # the page introduces the whole
            out.append(prose(model.__doc__.strip().split("\n\n")[0]) + "\n")
        rows = []
        for name, field in model.model_fields.items():
            nested = list(_models_in(field.annotation))
            prop = own["properties"][name]
            if nested:
                kind, inner = nested[0]
                base = "" if where == "Top level" else where.strip("[]") + "."
                key = {
                    "table": f"[{base}{name}]",
                    "map": f"[{base}{name}.NAME]",
                    "array": f"[[{base}{name}]]",
                }[kind]
                queue.append((key, inner))
                kind_text = {"table": "table", "map": "tables by name", "array": "array of tables"}[kind]
                type_text = f"{kind_text} {{ref}}`{key} <{label('definition', inner.__name__)}>`"
            else:
                type_text = text.type(prop)
            description = field.description or " ".join(docs.get((model.__name__, name), []))
            rows.append([code(name), type_text, _default(field), prose(description)])
        out.append(table(["key", "type", "default", "description"], rows))
    return "\n".join(out)


# --- Command lines from the argparse parsers ------------------------------------------------


def _option_rows(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[list[str]]:
    rows = []
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                formatter = parser._get_formatter()
                metavar = " " + formatter._format_args(
                    action, formatter._get_default_metavar_for_optional(action)
                )
            name = ", ".join(code(opt + metavar) for opt in action.option_strings)
        else:
            name = code(action.metavar or action.dest)
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or action.required or not action.option_strings:
            shown = ""
        else:
            shown = code(default)
        help_text = prose(action.help % {"default": default, "prog": parser.prog} if action.help else "")
        shows_choices = action.metavar is None  # the usage's {a,b,c} already lists them
        if action.choices and not shows_choices and "one of" not in (action.help or "").lower():
            help_text = (
                (help_text + " " if help_text else "")
                + "One of "
                + ", ".join(code(c) for c in action.choices)
                + "."
            )
        rows.append([name, shown, help_text])
    return rows


def parser_markdown(parser: argparse.ArgumentParser, level: int = 3) -> str:
    out = [f"({label('cli', parser.prog)})=", "#" * level + f" `{parser.prog}`\n"]
    if parser.description:
        out.append(prose(parser.description) + "\n")
    # A fixed width, so that the page does not depend on the terminal that built it.
    formatter_class = parser.formatter_class
    parser.formatter_class = lambda prog: formatter_class(prog, width=88)  # type: ignore[call-arg]
    try:
        usage = parser.format_usage().strip().removeprefix("usage: ")
    finally:
        parser.formatter_class = formatter_class
    out.append("```text\n" + usage + "\n```\n")
    rows = _option_rows(parser, parser._actions)
    if rows:
        out.append(table(["argument", "default", "description"], rows))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if helps.get(name) and not sub.description:
                    sub.description = helps[name]
                out.append(parser_markdown(sub, level + 1))
    return "\n".join(out)


def cli_aggregator() -> str:
    from aggregator.__main__ import build_parser

    return parser_markdown(build_parser())


def cli_participants() -> str:
    from order_saga.cli import CATALOG
    from participants.cli import build_parser
    from participants.spec import setting_fields

    out = [parser_markdown(build_parser(CATALOG))]
    for name, spec in CATALOG.specs.items():
        if not setting_fields(spec):
            continue
        parser = build_parser(CATALOG, spec)
        group = next(g for g in parser._action_groups if g.title == f"{spec.name} settings")
        out.append(f"({label('cli', 'participants', name)})=")
        out.append(f"#### `{name}` settings\n")
        out.append(f"Options of `python -m participants {name}` only.\n")
        out.append(table(["argument", "default", "description"], _option_rows(parser, group._group_actions)))
    return "\n".join(out)


def cli_trip_booking() -> str:
    from trip_booking.__main__ import _parser

    return parser_markdown(_parser())


# --- Metrics from the Prometheus registries -------------------------------------------------


def _metric_rows(families: list[tuple[str, str, str, list[str]]]) -> str:
    rows = [
        [code(name), kind, ", ".join(code(label) for label in labels), prose(help_text)]
        for name, kind, help_text, labels in sorted(families)
    ]
    return table(["name", "type", "labels", "description"], rows)


def _exposed(name: str, kind: str) -> str:
    """The name a family is scraped under (a counter's samples end in ``_total``)."""
    return f"{name}_total" if kind == "counter" and not name.endswith("_total") else name


def metrics_aggregator() -> str:
    from prometheus_client import ProcessCollector

    from aggregator.metrics import Metrics, Tally

    metrics = Metrics()
    labels: dict[str, list[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Tally):
            labels[value._name] = list(value._labels)
        elif hasattr(value, "_labelnames") and hasattr(value, "_name"):
            labels[value._name] = list(value._labelnames)
    process = {m.name for m in ProcessCollector(registry=None).collect()}
    families = [
        (_exposed(m.name, m.type), m.type, m.documentation, labels.get(m.name, []))
        for m in metrics.registry.collect()
        if m.name not in process
    ]
    return _metric_rows(families)


class _FakeStore:
    def unsent_count(self) -> int:
        return 0


class _FakeLink:
    counts: dict[str, int] = {}
    connected = False


class _FakeParticipant:
    """What :class:`participants.metrics.ParticipantMetrics` reads of a running participant."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.name = "NAME"
        self.counts = counts
        self.link = _FakeLink()
        self.store = _FakeStore()


def metrics_participant() -> str:
    from participants.metrics import COUNTED, ParticipantMetrics

    fake: Any = _FakeParticipant(dict.fromkeys(COUNTED, 0))
    families: list[tuple[str, str, str, list[str]]] = []
    for m in ParticipantMetrics(fake).registry.collect():
        if m.name.startswith("process_"):
            continue
        names = sorted({key for s in m.samples for key in s.labels})
        families.append((_exposed(m.name, m.type), m.type, m.documentation, names))
    return _metric_rows(families)


def metrics_process() -> str:
    from prometheus_client import ProcessCollector

    families: list[tuple[str, str, str, list[str]]] = [
        (_exposed(m.name, m.type), m.type, m.documentation, [])
        for m in ProcessCollector(registry=None).collect()
    ]
    if not families:  # no /proc to read: the collector exports nothing here
        return "The `process_*` metrics of the Prometheus client (CPU, memory, open files; on Linux).\n"
    return _metric_rows(families)


GENERATORS: dict[str, Callable[[], str]] = {
    "http-aggregator": http_aggregator,
    "http-participant": http_participant,
    "definition": definition_markdown,
    "cli-aggregator": cli_aggregator,
    "cli-participants": cli_participants,
    "cli-trip-booking": cli_trip_booking,
    "metrics-aggregator": metrics_aggregator,
    "metrics-participant": metrics_participant,
    "metrics-process": metrics_process,
}


# --- Sphinx hooks ---------------------------------------------------------------------------


def _fill(app: Sphinx, docname: str, source: list[str]) -> None:
    def generated(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ExtensionError(f"{docname}: unknown generated block {name!r} (known: {sorted(GENERATORS)})")
        return GENERATORS[name]()

    if MARKER.search(source[0]):
        source[0] = MARKER.sub(generated, source[0])
        _generated_pages(app.env).add(docname)


def _generated_pages(env: BuildEnvironment) -> set[str]:
    pages: set[str] | None = getattr(env, "saga_generated_pages", None)
    if pages is None:
        pages = set()
        env.saga_generated_pages = pages  # type: ignore[attr-defined]
    return pages


def _outdated(
    app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Pages made from the code are read again on every build: the code may have changed."""
    return sorted(_generated_pages(env) - removed - added - changed)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _fill)
    app.connect("env-get-outdated", _outdated)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True, "env_version": 1}
