"""Shared checks for the client-library models: incremental occlusion equals full re-inference,
and the deconvnet / guided maps equal a reference built by swapping the model's ReLU (and ReLU6)
for an independent custom-VJP one written here."""


import jax
import jax.numpy as jnp
import numpy as np

import saliency_jax as sj

__all__ = ["reference_relu", "reference_relu6", "reference_map", "check_occlusion", "check_backprop"]


def _rectifier(rule: str, cap: float):
    @jax.custom_vjp
    def act(x):
        return jnp.minimum(jnp.maximum(x, jnp.zeros((), x.dtype)), jnp.asarray(cap, x.dtype))

    def fwd(x):
        return act(x), x

    def bwd(x, g):
        if rule == "deconvnet":  # Zeiler & Fergus: rectify the signal, never read the activation
            return (jnp.where(g > 0, g, jnp.zeros((), g.dtype)),)
        # guided (Springenberg et al.): the gradient's mask [0 < x < cap] and a rectified signal
        return (jnp.where((x > 0) & (x < cap) & (g > 0), g, jnp.zeros((), g.dtype)),)

    act.defvjp(fwd, bwd)
    return act


def reference_relu(rule: str):
    """A ReLU whose VJP is ``rule``'s (``"deconvnet"`` or ``"guided"``), independent of saliency_jax."""
    return _rectifier(rule, np.inf)


def reference_relu6(rule: str):
    """ReLU6 with the documented rules: deconvnet ``relu(g)``, guided ``relu(g)·[0<x<6]``."""
    return _rectifier(rule, 6.0)


def reference_map(apply_fn, variables, image, target: int, rule: str, monkeypatch, patches):
    """``d logit[target] / d image`` with every ``(module, name, kind)`` in ``patches`` replaced by the
    reference activation of ``kind`` (``"relu"`` or ``"relu6"``) while the model is traced."""
    make = {"relu": reference_relu, "relu6": reference_relu6}
    with monkeypatch.context() as m:
        for module, name, kind in patches:
            m.setattr(module, name, make[kind](rule))
        score = jax.jit(lambda x: apply_fn(variables, x[None])[0, target])
        return np.asarray(jax.grad(score)(jnp.asarray(image)))


def check_backprop(apply_fn, variables, image, target, monkeypatch, patches, rules=("deconvnet", "guided")):
    """``sj.deconvnet`` / ``sj.guided_backprop`` (strict) equal :func:`reference_map`; returns the maps."""
    out = {}
    for rule in rules:
        fn = sj.deconvnet if rule == "deconvnet" else sj.guided_backprop
        ours = np.asarray(fn(apply_fn, variables, image, target=target))
        ref = reference_map(apply_fn, variables, image, target, rule, monkeypatch, patches)
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        out[rule] = ours
    return out


def check_occlusion(apply_fn, variables, image, *, window, stride, target):
    """``method="incremental"`` equals ``method="full"`` within float32 rounding; returns the map."""
    kw = dict(window=window, stride=stride, target=target)
    full = np.asarray(sj.occlusion(apply_fn, variables, image, method="full", **kw))
    inc = np.asarray(sj.occlusion(apply_fn, variables, image, method="incremental", **kw))
    logits = np.asarray(apply_fn(variables, jnp.asarray(image)[None]))
    scale = max(np.abs(logits).max(), 1e-6)
    assert np.abs(full).max() > 1e-4 * scale  # the windows change the score: the comparison means something
    # 5e-5: ResNet-50's 50 layers (softmax head) moved a window's score by 2.3e-5 of the scale in a full
    # session while 2e-5 held alone (XLA picks its kernels per compile); a wrong region is off by far more.
    np.testing.assert_allclose(inc, full, rtol=0, atol=5e-5 * scale)
    return full
