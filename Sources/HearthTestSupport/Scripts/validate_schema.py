#!/usr/bin/env python3
"""Validates a JSON document against an official schema, kind `csaf` (CSAF 2.0) or `osv`, or
against the JSON Schema 2020-12 file given as the kind (a path ending in .json: Hearth's own).

The schemas are put in ${XDG_CACHE_HOME:-~/.cache}/hearth/schemas by .ci/schemas.sh (from the PyPI
packages that carry them; no network at test time).
Exit status: 0 valid, 1 invalid (each error printed), 3 the schema or jsonschema is missing.
"""
import json
import os
import sys


def main():
    kind, path = sys.argv[1], sys.argv[2]
    try:
        import jsonschema
    except ImportError:
        print("missing: jsonschema (pip install jsonschema)")
        return 3
    validators = {"csaf": jsonschema.Draft202012Validator, "osv": jsonschema.Draft202012Validator}
    if kind.endswith(".json"):
        schema_path = kind
        validator = jsonschema.Draft202012Validator
    elif kind not in validators:
        print(f"unknown kind {kind}")
        return 2
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        schema_path = os.path.join(cache, "hearth", "schemas", kind + ".json")
        if not os.path.exists(schema_path):
            print(f"missing: {schema_path} (run .ci/schemas.sh)")
            return 3
        validator = validators[kind]
    with open(schema_path) as f:
        validator.check_schema(json.load(f))
    with open(schema_path) as f:
        schema = json.load(f)
    with open(path) as f:
        document = json.load(f)
    errors = sorted(validator(schema, format_checker=validator.FORMAT_CHECKER).iter_errors(document), key=lambda e: list(e.path))
    for e in errors:
        print("/".join(map(str, e.path)) + ": " + e.message)
    print("valid" if not errors else f"{len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
