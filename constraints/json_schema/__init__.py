"""JSON Schema constraints: a schema compiled into a grammar over JSON text, run as a token DFA or an
Earley-checked grammar, the finished answer validated against the full schema.

    compile_json_schema(schema, tokenizer, vocab_size, strict)  -> TokenDFA | GrammarConstraint (route.py)
    schema_to_regex(schema, whitespace=None, strict=False)      -> one regex (plan.py)
    schema_violations(schema, text)                             -> [] when valid (validate.py)

Parts: refs.py ($ref resolution), rewrite.py (allOf merging, `not` and conditionals into positive
forms), compiler.py + containers.py (keywords -> grammar), pattern.py (ECMA-262 patterns), numbers.py
(decimal ranges), formats.py, text.py (regex text), ir.py (the grammar, rendered as a regex or Lark).

The language is a subset of the valid JSON texts, chosen to be small and natural for a model:

JSON style
    whitespace=None (default): what `json.dumps(value, ensure_ascii=False)` writes (", " and ": ", nothing
    inside brackets or around the value). With `whitespace` a regex W matching only JSON whitespace, W
    is allowed around every "," and ":" and inside every bracket pair.
Objects
    Declared properties in declared order, then extra entries (patternProperties keys, and other keys
    when additionalProperties is a schema or the object declares nothing), see containers.py.
    propertyNames, minProperties/maxProperties, dependentRequired/dependencies/dependentSchemas (as
    "absent, or present with its dependents") are enforced.
Arrays
    prefixItems / tuple items, items/additionalItems, minItems/maxItems, contains/minContains.
Strings
    `pattern` (ECMA-262) in its search semantics (anchors respected), translated to the JSON encoding;
    with minLength/maxLength the pattern matched in full where that fits. formats: formats.py; any other
    format is an annotation (a plain string), as the specification says.
Numbers
    Canonical integers, exact decimal ranges without exponent (numbers.py); multipleOf 1 = integer.
enum / const, anyOf / oneOf / allOf, if/then/else, not
    allOf merges (annotations and unknown keywords ignored); `not` and `if` are rewritten into positive
    forms where rewrite.py has one (not of required/enum/const/type/bounds/anyOf/allOf/properties).
$ref
    Within the document: JSON pointers, $defs/definitions, $anchor, $id-relative (embedded resources).
    External references are refused: nothing is fetched. Recursion stays recursive in the grammar
    route; the regex route unrolls it MAX_REF_DEPTH levels.
Any JSON
    `{}`/`true`: scalars and flat arrays/objects of scalars (ANY_DEPTH = 1).

Relaxed (strict=False, the default: left out during decoding, checked by schema_violations afterwards;
strict=True refuses the schema with one sentence): uniqueItems (beyond maxItems <= 1), multipleOf other
than 1, oneOf whose branches may overlap (exclusivity), `not` without a positive form (e.g. not of a
pattern), maxContains, contains beside bounds or a prefix, a second pattern/format in one string,
minLength/maxLength that a pattern's language cannot be cut to, unevaluated* schemas, propertyNames
beside patternProperties, minProperties that would need two extra keys.
"""
from dllm.constraints.json_schema.compiler import ANY_DEPTH
from dllm.constraints.json_schema.numbers import MAX_FRACTION_DIGITS, integer_range_regex, number_range_regex
from dllm.constraints.json_schema.plan import MAX_REF_DEPTH, REGEX_BUDGET, Plan, plan_schema, schema_to_regex
from dllm.constraints.json_schema.route import choose_route, compile_json_schema
from dllm.constraints.json_schema.validate import schema_violations

__all__ = ["ANY_DEPTH", "MAX_FRACTION_DIGITS", "MAX_REF_DEPTH", "REGEX_BUDGET", "Plan", "choose_route",
           "compile_json_schema", "integer_range_regex", "number_range_regex", "plan_schema", "schema_to_regex",
           "schema_violations"]
