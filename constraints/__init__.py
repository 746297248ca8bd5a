"""Constrained decoding: regular expressions, JSON schemas and grammars compiled against a model's vocabulary.

Kept import-light on purpose (no torch here): `dllm.constraints.regex.check_regex` runs while a
`SamplingParams` is validated. Import the submodules you need, e.g. `from dllm.constraints.regex import
compile_regex`.
"""
if __name__ != "dllm.constraints":   # imported from a checkout's root under its own name: see dllm/_shadow.py
    from dllm._shadow import defer
    defer(__name__, __file__)

