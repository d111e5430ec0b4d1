"""The configuration reference, generated from the typed settings so it can never disagree with them.

`psma-node config reference` prints it; docs/configuration.md is its committed output, and a test
regenerates it and compares, so a key added to dicom_node/config.py without regenerating fails the suite.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dicom_node.config import ENV_PREFIX, Settings
from dicom_node.transfer_syntaxes import reference_lines

REGENERATE_COMMAND = "psma-node config reference > docs/configuration.md"


@dataclass(frozen=True)
class KeyDoc:
    """One documented key: its dotted path, rendered type, default and meaning."""

    key: str
    type: str
    default: str
    meaning: str


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside list[Model], whose fields are documented as `key[].field`."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if _is_model(item):
            return item
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "pair of " + _type_name(args[0]) if len(args) == 2 and args[0] == args[1] else "tuple"
    if annotation is SecretStr:
        return "secret string"
    if annotation is Path:
        return "path"
    if _is_model(annotation):
        return "mapping"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    """Numeric and length limits from the Field, e.g. `1 ≤ x ≤ 65535`."""
    parts: list[str] = []
    for item in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
        if isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} characters")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    """A default as it would be written in YAML."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "*required*"
    else:
        value = field.default
    plain = _plain(value)
    if plain is None:
        return "`null`"
    if isinstance(plain, str):
        return f"`{plain}`" if plain else '`""`'
    return "`" + json.dumps(plain, ensure_ascii=False) + "`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _keys(model: type[BaseModel], prefix: str) -> list[KeyDoc]:
    docs: list[KeyDoc] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if _is_model(annotation):
            docs.extend(_keys(annotation, key + "."))
            continue
        rendered = _type_name(annotation)
        bounds = _bounds(field)
        if bounds:
            rendered += f" ({bounds})"
        docs.append(KeyDoc(key, rendered, _default(field), field.description or ""))
        item = _list_item_model(annotation)
        if item is not None:
            docs.extend(_keys(item, key + "[]."))
    return docs


def reference_entries(settings_model: type[BaseModel] = Settings) -> dict[str, list[KeyDoc]]:
    """Every leaf key of the configuration, grouped by top-level section, in declaration order."""
    sections: dict[str, list[KeyDoc]] = {}
    for name, field in settings_model.model_fields.items():
        annotation = field.annotation
        if not _is_model(annotation):
            raise TypeError(f"top-level setting {name} must be a section")
        sections[name] = _keys(annotation, name + ".")
    return sections


def _section_intro(settings_model: type[BaseModel], name: str) -> str:
    annotation = settings_model.model_fields[name].annotation
    doc = (annotation.__doc__ or "").strip() if _is_model(annotation) else ""
    inherited = (BaseModel.__doc__ or "").strip()
    return "" if not doc or doc == inherited else doc.splitlines()[0]


def render_reference(settings_model: type[BaseModel] = Settings) -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from dicom_node/config.py by `{REGENERATE_COMMAND}`; do not edit by hand. -->",
        "",
        "The node reads one YAML file (`psma-node --config FILE`, or `PSMA_NODE_CONFIG`; default: the",
        "repository's `config.yaml`, which documents every key inline; an installed package prints the same",
        "example with `psma-node config example > config.yaml`). Relative paths are relative to the",
        "folder of that file. Any key can be overridden from the environment as",
        f"`{ENV_PREFIX}<SECTION>__<KEY>=value` (the value is parsed as YAML), e.g.",
        f"`{ENV_PREFIX}NODE__PORT=11113` or `{ENV_PREFIX}DATABASE__URL=postgresql+psycopg2://…`.",
        "`psma-node config check` validates a file and prints the effective settings with secrets masked;",
        "`psma-node doctor` checks that the machine matches it (ports, folders, database, peers, weights).",
        "",
        "Keys written `a[].b` are fields of each entry of the list `a`. Unknown keys are rejected.",
        "",
        "Sections: " + ", ".join(f"[`{name}`](#{name})" for name in settings_model.model_fields) + ".",
    ]
    for section, docs in reference_entries(settings_model).items():
        lines += ["", f"## {section}", ""]
        intro = _section_intro(settings_model, section)
        if intro:
            lines += [intro, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for doc in docs:
            lines.append(
                f"| `{doc.key}` | {_escape(doc.type)} | {_escape(doc.default)} | {_escape(doc.meaning)} |"
            )
        if section == "node" and settings_model is Settings:
            lines += ["", *_transfer_syntaxes()]
    return "\n".join(lines) + "\n"


def _transfer_syntaxes() -> list[str]:
    """What the DICOM listener accepts and what becomes of lossy images: no key, but an admin must know."""
    return [
        "### Transfer syntaxes and lossy images",
        "",
        "Every storage SOP class accepted (PET and CT always; the others with `other_storage_classes: "
        "store`) is offered in these transfer syntaxes, in this order of preference (the node takes the "
        "first one a sender proposes in a presentation context, so lossless ones win over uncompressed and "
        "uncompressed over lossy). Instances are stored as they arrive. A class a sender offers only in "
        "other syntaxes (e.g. High-Throughput JPEG 2000) cannot be sent: the association's audit row "
        "(`unsupported_transfer_syntaxes`) and a WARNING line name the class and the syntax offered.",
        "",
        *reference_lines(),
        "",
        "An instance counts as lossy-compressed when its Lossy Image Compression (0028,2110) is `01`, or "
        "when it arrives in a syntax marked lossy above and does not state Lossy Image Compression `00`. Before "
        "analysis, a PET series with any such slice is not analysed: the study is rejected with the reason "
        "(how many slices, which syntax or attribute) in its state and an audit row, since SUV measured on "
        "lossy pixels is not the scanner's. A lossy-compressed CT is analysed (it only places the analysed "
        "region and the organs; a lossless CT of the same study is preferred), and the result's warnings "
        "say so.",
    ]
