"""Copy the request schemas the fake ESP validates against out of the vendors' OpenAPI files.

A developer tool, not a test: tests only read the JSON files this writes (a user's checkout has
no ../shared). Run from the repository root when a vendor description changes:

    python tests/schemas/extract.py ../shared/esp-openapi

Each output file is one JSON Schema (draft 2020-12) with the referenced components inlined
under `$defs`, and a `$comment` naming the source file and component.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# output name -> (source file, component schema name)
WANTED = {
    "buttondown-EmailInput": ("buttondown.json", "EmailInput"),
    "buttondown-EmailUpdateInput": ("buttondown.json", "EmailUpdateInput"),
    "buttondown-SendDraftInput": ("buttondown.json", "SendDraftInput"),
    "resend-SendEmailRequest": ("resend.yaml", "SendEmailRequest"),
    "resend-CreateBroadcastOptions": ("resend.yaml", "CreateBroadcastOptions"),
    "resend-SendBroadcastOptions": ("resend.yaml", "SendBroadcastOptions"),
    "postmark-SendEmailRequest": ("postmark.yaml", "SendEmailRequest"),
    # Mailgun's form fields (multipart/form-data), validated as JSON: repeated fields as lists
    "mailgun-SendMessage": (
        "mailgun.yaml",
        "POST-v3-domain_name-messages-multipart-form-data-RequestBody",
    ),
    # SendGrid's request body lives under components.requestBodies, not components.schemas
    "sendgrid-PostMailSend": ("sendgrid_mail_v3.yaml", "requestBodies/PostMailSend"),
}

# Postmark's copy is an old spec: its prose docs add these request fields (see SOURCES.md).
POSTMARK_ADDITIONS = {
    "MessageStream": {"type": "string", "description": "added from Postmark's docs"},
    "Metadata": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "added from Postmark's docs",
    },
}


def load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/components/schemas/", "#/$defs/")
                if k == "$ref" and isinstance(v, str)
                else rewrite(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rewrite(v) for v in node]
    return node


def component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """components.schemas[name], or a request body's JSON schema ("requestBodies/NAME")."""
    kind, _, body = name.rpartition("/")
    if kind == "requestBodies":
        schema: dict[str, Any] = spec["components"]["requestBodies"][body]["content"][
            "application/json"
        ]["schema"]
        return schema
    return dict(spec["components"]["schemas"][name])


def extract(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    root = component(spec, name)
    needed: dict[str, Any] = {}
    todo = list(refs(root))
    while todo:
        ref = todo.pop()
        if ref in needed:
            continue
        needed[ref] = schemas[ref]
        todo.extend(refs(schemas[ref]) - needed.keys())
    schema = rewrite(dict(root))
    if needed:
        schema["$defs"] = rewrite(needed)
    return schema


def main(source_dir: str) -> None:
    src = Path(source_dir)
    for out_name, (file_name, name) in WANTED.items():
        spec = load(src / file_name)
        schema = extract(spec, name)
        if out_name.startswith("postmark-"):
            schema["properties"].update(POSTMARK_ADDITIONS)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": f"copied from ../shared/esp-openapi/{file_name} components."
            f"{'' if '/' in name else 'schemas.'}{name} by tests/schemas/extract.py",
            **schema,
        }
        (HERE / f"{out_name}.json").write_text(json.dumps(schema, indent=1) + "\n")
        print(out_name, len(json.dumps(schema)), "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/esp-openapi")
