"""Generated documentation: `doc/openapi.yaml`, a self-contained HTML page made from it, and the
table of settings in `doc/configuration.md`."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import yaml

from idios.config import Settings


def openapi_schema(settings: Settings) -> dict[str, Any]:
    from idios.api.app import create_app
    from idios.transport.amqp import AmqpTransport

    return create_app(settings, AmqpTransport(settings)).openapi()


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short readable type, with links to named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"<a href='#schema-{html.escape(name)}'>{html.escape(name)}</a>"
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"object of {_type(extra) if isinstance(extra, dict) else 'any'}"
    return html.escape(str(schema.get("type", "any")))


def _limits(schema: dict[str, Any]) -> str:
    keys = ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "default")
    return ", ".join(f"{key} {html.escape(json.dumps(schema[key]))}" for key in keys if key in schema)


def _fields_table(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = ["<table><tr><th>field</th><th>type</th><th></th><th>description</th></tr>"]
    for name, field in schema.get("properties", {}).items():
        flag = "required" if name in required else _limits(field)
        rows.append(
            f"<tr><td><code>{html.escape(name)}</code></td><td>{_type(field)}</td><td>{flag}</td>"
            f"<td>{html.escape(field.get('description', ''))}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def render_html(schema: dict[str, Any]) -> str:
    """One page listing every operation with its parameters, body and answers; no scripts, no CDN."""
    info = schema["info"]
    title = f"{html.escape(info['title'])} API {html.escape(info['version'])}"
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{title}</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code{background:#f4f4f4;border-radius:4px;padding:0 .2rem}table{border-collapse:collapse;margin:.5rem 0}"
        "td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}"
        ".op{border-top:1px solid #ccc;padding-top:.5rem}.m{font-weight:bold;text-transform:uppercase}</style>",
        "</head><body>",
        f"<h1>{title}</h1>",
        *(f"<p>{html.escape(para)}</p>" for para in info.get("description", "").split("\n\n")),
        "<h2>Operations</h2><ul>",
        *(
            f"<li><a href='#{op['operationId']}'><span class='m'>{method}</span> {html.escape(path)}</a>"
            f" {html.escape(op.get('summary', ''))}</li>"
            for path, method, op in operations
        ),
        "</ul>",
    ]
    for path, method, op in operations:
        parts.append(f"<div class='op' id='{op['operationId']}'>")
        parts.append(f"<h3><span class='m'>{method}</span> <code>{html.escape(path)}</code></h3>")
        parts.append(f"<p>{html.escape(op.get('summary', ''))}</p>")
        if op.get("parameters"):
            parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>")
            for param in op["parameters"]:
                flag = "required" if param.get("required") else _limits(param.get("schema", {}))
                parts.append(
                    f"<tr><td><code>{html.escape(param['name'])}</code></td><td>{param['in']}</td>"
                    f"<td>{_type(param.get('schema', {}))}</td><td>{flag}</td></tr>"
                )
            parts.append("</table>")
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            parts.append(f"<p>Body ({html.escape(media)}): {_type(content.get('schema', {}))}</p>")
        parts.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
        for status, answer in op.get("responses", {}).items():
            body = ", ".join(_type(c.get("schema", {})) for c in answer.get("content", {}).values())
            parts.append(f"<tr><td>{html.escape(status)}</td><td>{html.escape(answer.get('description', ''))}</td>")
            parts.append(f"<td>{body}</td></tr>")
        parts.append("</table></div>")
    parts.append("<h2>Schemas</h2>")
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id='schema-{html.escape(name)}'>{html.escape(name)}</h3>")
        if component.get("properties"):
            parts.append(_fields_table(component))
        else:
            parts.append(f"<p>{_type(component)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reference(settings: Settings, out: Path) -> list[Path]:
    schema = openapi_schema(settings)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path, html_path = out / "openapi.yaml", out / "api.html"
    yaml_path.write_text(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), encoding="utf-8")
    html_path.write_text(render_html(schema), encoding="utf-8")
    return [yaml_path, html_path]


SETTINGS_START, SETTINGS_END = "<!-- settings:start -->", "<!-- settings:end -->"


def settings_table() -> str:
    """Markdown table of every IDIOS_* variable, its default and its description."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default)
        shown = "" if default is None else str(default)
        rows.append(f"| `IDIOS_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(rows)


def update_settings_table(path: Path) -> None:
    """Replace the settings table of a markdown page (between the markers) with the generated one."""
    text = path.read_text(encoding="utf-8")
    if text.count(SETTINGS_START) != 1 or text.count(SETTINGS_END) != 1:
        raise ValueError(f"{path} needs one {SETTINGS_START} and one {SETTINGS_END}")
    head, rest = text.split(SETTINGS_START, 1)
    _, tail = rest.split(SETTINGS_END, 1)
    path.write_text(f"{head}{SETTINGS_START}\n{settings_table()}\n{SETTINGS_END}{tail}", encoding="utf-8")
