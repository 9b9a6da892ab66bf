"""Lazy re-exports for package ``__init__`` files (PEP 562).

A package lists its public names and where each lives; the module behind a name is imported
the first time the name is read, so importing the package costs only what it imports itself.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

__all__ = ["lazy_exports", "deprecated_aliases"]


def lazy_exports(
    namespace: dict, exports: dict[str, tuple[str, str | None]], deprecated: dict[str, str] | None = None,
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``.

    Args:
        namespace: the package's ``globals()``; a name, once resolved, is cached there.
        exports: public name -> ``(module, attribute)``; attribute ``None`` re-exports the module.
        deprecated: old name -> the public name that replaces it: every read of the old name
            warns (``DeprecationWarning``) and returns the new one's value. Old names are
            neither listed in ``__all__`` nor cached.

    Example:
        >>> ns = {"__name__": "pkg"}
        >>> all_, getattr_, dir_ = lazy_exports(ns, {"sqrt": ("math", "sqrt")})
        >>> getattr_("sqrt")(4.0), "sqrt" in ns
        (2.0, True)
    """
    package = namespace["__name__"]
    deprecated = dict(deprecated or {})

    def __getattr__(name: str):
        if name in deprecated:
            new = deprecated[name]
            warnings.warn(f"{package}.{name} is deprecated; use {package}.{new}", DeprecationWarning, stacklevel=2)
            return namespace[new] if new in namespace else __getattr__(new)
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


def deprecated_aliases(module: str, aliases: dict[str, tuple[str, object]]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) serving old names, each read with a ``DeprecationWarning``.

    Args:
        module: the module's ``__name__``.
        aliases: old name -> ``(new name, value)``.

    Example:
        >>> import warnings
        >>> getattr_ = deprecated_aliases("pkg", {"OLD": ("NEW", 1)})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     getattr_("OLD"), str(caught[0].message)
        (1, 'pkg.OLD is deprecated; use pkg.NEW')
    """

    def __getattr__(name: str):
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = aliases[name]
        warnings.warn(f"{module}.{name} is deprecated; use {module}.{new}", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
