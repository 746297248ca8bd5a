"""Why running Python from a checkout's root is safe although its top-level folders share names with
other packages (`kernels` is also Hugging Face's, which transformers imports; `evals`, `constraints`
and `schedulers` exist on PyPI too).

The folders schedulers/, constraints/, kernels/ and evals/ are installed as dllm.schedulers, ... (pyproject's
package-dir). Python puts the current directory (or a script's folder) first on sys.path, so from the
root `import kernels` would find our folder before the installed package of that name. Each of those
folders' __init__.py therefore starts with

    if __name__ != "dllm.<folder>":
        from dllm._shadow import defer
        defer(__name__, __file__)

and `defer` loads the package that owns the name from the rest of sys.path into sys.modules (the import
statement returns what sys.modules holds once the module body has run), or fails exactly as a missing
module does. Nothing edits sys.path.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def defer(name: str, init_file: str) -> None:
    """Our folder was imported as the top-level `name`: replace it with whatever else sys.path holds under
    that name, or raise ModuleNotFoundError."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(init_file)))
    elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
    if spec is None:
        sys.modules.pop(name, None)
        raise ModuleNotFoundError(f"No module named {name!r} (the checkout's {name}/ folder is dllm.{name})",
                                  name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
