"""Faithfulness metrics: how well a saliency map points at what matters (issue 12)."""

__all__: list[str] = []
