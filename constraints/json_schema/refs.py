"""`$ref` resolution inside one schema document: JSON pointers, `$defs`/`definitions`, `$anchor`, and
references relative to an `$id` (embedded resources included). Nothing is fetched: a reference
that leaves the document (another file or a URL no `$id` in it names) raises ConstraintError.

Every subschema is named by its JSON pointer from the document root ("#/$defs/a"); the compiler
uses that name for its rules, so a schema reached by several references is compiled once.
"""
from __future__ import annotations

from urllib.parse import unquote, urldefrag, urljoin

from dllm.errors import ConstraintError

# keywords whose values are subschemas / maps or lists of subschemas: where `$id`s can sit
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_ONE = ("additionalProperties", "additionalItems", "items", "not", "if", "then", "else", "contains",
        "propertyNames", "unevaluatedProperties", "unevaluatedItems")


def ptr(where: str, *keys) -> str:
    return where + "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in keys)


class Document:
    """The root schema with its resources ({absolute URI: pointer}) and anchors."""

    def __init__(self, root):
        self.root = root
        self.resources: dict[str, str] = {"": "#"}
        self.anchors: dict[tuple[str, str], str] = {}
        self.bases: dict[str, str] = {"#": ""}        # pointer of a resource root -> its base URI
        self._walk(root, "#", "")

    def _walk(self, s, where: str, base: str):
        if not isinstance(s, dict):
            return
        sid = s.get("$id", s.get("id") if isinstance(s.get("id"), str) else None)
        if isinstance(sid, str):
            if sid.startswith("#"):                  # draft 4-7 plain-name fragment: an anchor
                self.anchors[(base, sid[1:])] = where
            else:
                base = urljoin(base, sid)
                self.resources[urldefrag(base)[0]] = where
                self.bases[where] = urldefrag(base)[0]
                if where == "#":
                    self.resources[""] = "#"
        if isinstance(s.get("$anchor"), str):
            self.anchors[(urldefrag(base)[0], s["$anchor"])] = where
        if isinstance(s.get("$dynamicAnchor"), str):
            self.anchors.setdefault((urldefrag(base)[0], s["$dynamicAnchor"]), where)
        for k in _MAPS:
            if isinstance(s.get(k), dict):
                for name, sub in s[k].items():
                    self._walk(sub, ptr(where, k, name), base)
        for k in _LISTS:
            if isinstance(s.get(k), list):
                for i, sub in enumerate(s[k]):
                    self._walk(sub, ptr(where, k, i), base)
        for k in _ONE:
            if isinstance(s.get(k), dict):
                self._walk(s[k], ptr(where, k), base)

    def base_of(self, where: str) -> str:
        """The base URI in force at pointer `where` (that of the innermost resource holding it)."""
        best_p, best = "", ""
        for p, b in self.bases.items():
            if (where == p or where.startswith(p + "/")) and len(p) > len(best_p):
                best_p, best = p, b
        return best

    def resolve(self, ref, where: str):
        """-> (target schema, its pointer). `where` is the pointer of the schema holding the $ref."""
        if not isinstance(ref, str):
            raise ConstraintError(f"the $ref at {where} must be a string, got {ref!r}.")
        full = urljoin(self.base_of(where), ref)
        uri, frag = urldefrag(full)
        if uri not in self.resources:
            raise ConstraintError(f"the $ref {ref!r} at {where} points outside the schema (another file or a URL), "
                                  f"and nothing is fetched.")
        frag = unquote(frag)
        if frag and not frag.startswith("/"):
            target = self.anchors.get((uri, frag))
            if target is None:
                raise ConstraintError(f"the $ref {ref!r} at {where} names an anchor the schema does not define.")
            return self.at(target), target
        target = self.resources[uri] + frag
        return self.at(target, ref, where), target

    def at(self, pointer: str, ref=None, where: str = ""):
        node = self.root
        for part in pointer[1:].split("/")[1:] if pointer != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ConstraintError(f"the $ref {ref!r} at {where} points at nothing in the schema.")
        return node
