"""The plotting set-up shared by every figure and overlay: a headless matplotlib, checked colour maps.

matplotlib loads with the first call, never with the module, so nothing that merely imports
this file pays for (or needs) the plotting library.

Example:
    >>> check_cmap("cmap", "jet")
    'jet'
    >>> pyplot().get_backend().lower()
    'agg'
"""

from __future__ import annotations

__all__ = ["pyplot", "check_cmap"]


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (an interactive backend chosen earlier is kept)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def check_cmap(name: str, cmap) -> str:
    """``cmap`` if it names a matplotlib colour map; a ``ValueError`` naming ``name`` otherwise."""
    from matplotlib import colormaps

    if not isinstance(cmap, str) or cmap not in colormaps:
        raise ValueError(f"`{name}` (={cmap!r}) must be a matplotlib colour-map name, e.g. 'jet', 'viridis', 'RdBu_r'")
    return cmap
