"""Generated documentation: `doc/openapi.yaml`, a self-contained HTML page made from it, and the
README's table of settings."""

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


def render_html(schema: dict[str, Any]) -> str:
    """One page listing every operation with its parameters, body and answers; no scripts, no CDN."""
    info = schema["info"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(info['title'])} API {html.escape(info['version'])}</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code,pre{background:#f4f4f4;border-radius:4px}pre{padding:.5rem;overflow:auto}"
        ".op{border-top:1px solid #ddd;padding-top:1rem}.m{font-weight:bold;text-transform:uppercase}</style>",
        "</head><body>",
        f"<h1>{html.escape(info['title'])} API <small>{html.escape(info['version'])}</small></h1>",
        f"<pre>{html.escape(info.get('description', ''))}</pre>",
    ]
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            parts.append("<div class='op'>")
            parts.append(f"<h2><span class='m'>{method}</span> <code>{html.escape(path)}</code></h2>")
            parts.append(f"<p>{html.escape(op.get('summary', ''))}</p>")
            for param in op.get("parameters", []):
                parts.append(f"<p>parameter <code>{html.escape(param['name'])}</code> ({param['in']})</p>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                parts.append(
                    f"<p>body ({html.escape(media)}):</p><pre>{html.escape(json.dumps(content['schema']))}</pre>"
                )
            for status, answer in op.get("responses", {}).items():
                parts.append(f"<p>{html.escape(status)}: {html.escape(answer.get('description', ''))}</p>")
            parts.append("</div>")
    parts.append("<h2>Schemas</h2>")
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>")
        parts.append(f"<pre>{html.escape(json.dumps(component, indent=2))}</pre>")
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
        default = field.default_factory() if field.default_factory else field.default
        if isinstance(default, list):
            default = ",".join(default)
        shown = "" if default is None else str(default)
        rows.append(f"| `IDIOS_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(rows)


def update_readme(path: Path) -> None:
    """Replace the README's settings table (between the markers) with the generated one."""
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(SETTINGS_START, 1)
    _, tail = rest.split(SETTINGS_END, 1)
    path.write_text(f"{head}{SETTINGS_START}\n{settings_table()}\n{SETTINGS_END}{tail}", encoding="utf-8")
