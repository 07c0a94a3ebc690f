"""kubernetes-asyncio without importing all of it: each generated class is imported when first used.

`import kubernetes_asyncio` runs `kubernetes_asyncio/client/__init__.py`, which imports every API class (~70) and
every model (~750) the OpenAPI generator wrote, about 60 MB of code objects and docstrings: most of an idle
reconciler's memory. We use a handful. `install()` puts lazy stand-ins for the package, `client`, `client.api` and
`client.models` into `sys.modules`, each with the real folder as its `__path__` and a module `__getattr__`
(PEP 562) that imports a name from the module the real `__init__.py` imports it from (read with `ast`, never
executed). Submodules (`kubernetes_asyncio.client.exceptions`, `.config`) import as usual; the generated
`ApiClient` finds models with `getattr(kubernetes_asyncio.client.models, name)`, which the stand-in answers.

Called once from `common/__init__.py`, before anything imports kubernetes-asyncio; a process that imported it
already keeps the real modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Final

__all__ = ["install"]

PACKAGE: Final = "kubernetes_asyncio"
LAZY: Final = ("", ".client", ".client.api", ".client.models")


def install() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return  # not installed: the import that follows says so
    root = Path(spec.origin).parent
    for suffix in LAZY:
        name = PACKAGE + suffix
        module = sys.modules[name] = _stand_in(name, root.joinpath(*suffix.split(".")[1:]))
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)  # what importing it would have done


def _stand_in(name: str, folder: Path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    module.__package__ = name
    module.__file__ = str(folder / "__init__.py")
    index = _names(folder / "__init__.py")

    def __getattr__(attribute: str) -> Any:
        source = index.get(attribute)
        if source is None:
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        value = getattr(importlib.import_module(source), attribute)
        setattr(module, attribute, value)
        return value

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def _names(init: Path) -> dict[str, str]:
    """What `init` imports with `from M import N` (absolute): N -> M. Plain `import` lines are submodules, which
    Python imports by itself when asked for one."""
    found: dict[str, str] = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
            for alias in node.names:
                found[alias.asname or alias.name] = node.module
    return found
