"""Lazy re-exports for package ``__init__`` files (PEP 562).

A package lists its public names and where each lives; the module behind a name is imported
the first time the name is read, so importing the package costs only what it imports itself.
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict, exports: dict[str, tuple[str, str | None]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``.

    Args:
        namespace: the package's ``globals()``; a name, once resolved, is cached there.
        exports: public name -> ``(module, attribute)``; attribute ``None`` re-exports the module.

    Example:
        >>> ns = {"__name__": "pkg"}
        >>> all_, getattr_, dir_ = lazy_exports(ns, {"sqrt": ("math", "sqrt")})
        >>> getattr_("sqrt")(4.0), "sqrt" in ns
        (2.0, True)
    """
    package = namespace["__name__"]

    def __getattr__(name: str):
        try:
            module, attr = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = importlib.import_module(module)
        if attr is not None:
            value = getattr(value, attr)
        namespace[name] = value  # later look-ups find it without calling this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return sorted(exports), __getattr__, __dir__
