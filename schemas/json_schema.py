"""An Avro record as the JSON Schema of its JSON form: what an HTTP caller writes in `data`.

For the ingest API's OpenAPI document: each event type's request body, generated from the
catalog's schemas, so a caller's tooling knows every field, its type and its limits.
"""

from __future__ import annotations

from typing import Any

_PRIMITIVES = {"string": "string", "int": "integer", "long": "integer", "float": "number",
               "double": "number", "boolean": "boolean", "null": "null"}
# Timestamps are taken as ISO 8601 with an offset or as epoch milliseconds.
_TIMESTAMP = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]}
_OPTIONAL_AT_INGEST = ("event_id",)  # generated when absent


def record_json_schema(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an Avro record's JSON form, its fields' limits and docs included."""
    properties, required = {}, []
    for field in record["fields"]:
        prop = type_json_schema(field["type"])
        for avro_name, json_name in (("maxLength", "maxLength"), ("pattern", "pattern")):
            if avro_name in field:
                prop = {**prop, json_name: field[avro_name]}
        if "doc" in field:
            prop = {**prop, "description": field["doc"]}
        properties[field["name"]] = prop
        if "default" not in field and field["name"] not in _OPTIONAL_AT_INGEST:
            required.append(field["name"])
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required,
                              "additionalProperties": False}
    return {**schema, "description": record["doc"]} if "doc" in record else schema


def type_json_schema(avro_type: Any) -> dict[str, Any]:
    if isinstance(avro_type, list):
        return {"anyOf": [type_json_schema(branch) for branch in avro_type]}
    if isinstance(avro_type, str):
        return {"type": _PRIMITIVES.get(avro_type, "object")}
    if str(avro_type.get("logicalType", "")).startswith("timestamp"):
        return dict(_TIMESTAMP)
    kind = avro_type["type"]
    if kind == "enum":
        return {"type": "string", "enum": list(avro_type["symbols"])}
    if kind == "map":
        return {"type": "object", "additionalProperties": type_json_schema(avro_type["values"])}
    if kind == "array":
        return {"type": "array", "items": type_json_schema(avro_type["items"])}
    if kind == "record":
        return record_json_schema(avro_type)
    return type_json_schema(kind)
