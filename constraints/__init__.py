"""Constrained decoding: regular expressions, JSON schemas and grammars compiled against a model's vocabulary.

Kept import-light on purpose (no torch here): `dllm.constraints.regex.check_regex` runs while a
`SamplingParams` is validated. Import the submodules you need, e.g. `from dllm.constraints.regex import
compile_regex`.
"""
