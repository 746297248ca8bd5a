"""The finished answer checked against the full schema with `jsonschema` (RequestOutput.stats.schema_violations)."""
from __future__ import annotations

import json

_MAX_REPORTED = 20


def schema_violations(schema, text: str | None) -> list[str]:
    """Sentences, one per failed assertion (at most 20), for `text` under `schema`; [] when valid.
    Formats are asserted only where jsonschema has a checker for them (as its FormatChecker does)."""
    import jsonschema

    if text is None:
        return ["the answer has no text (the model has no tokenizer), so it could not be checked."]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"the answer is not JSON: {e.msg} at character {e.pos}."]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        errors = sorted(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value),
                        key=lambda e: list(e.absolute_path))
        out = []
        for e in errors[:_MAX_REPORTED]:
            where = "/" + "/".join(str(p) for p in e.absolute_path)
            out.append(f"at {where}: {e.message} (keyword '{e.validator}' at #/"
                       f"{'/'.join(str(p) for p in e.absolute_schema_path)}).")
        return out
    except Exception as e:  # noqa: BLE001 - an unresolvable reference and the like: say so, never crash
        return [f"the answer could not be checked against the schema: {str(e).splitlines()[0]}"]
