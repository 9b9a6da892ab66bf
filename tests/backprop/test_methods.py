"""deconvnet / guided_backprop / gradient, unit projections, the dataset "top 9"; their argument checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import backprop
from saliency_jax.model.architectures import get_model
from tests.weights import np_init


@functools.lru_cache(maxsize=None)
def small(size=32, n=3):
    model = get_model("small", num_classes=3, width=0.125, fc=(8,))
    x = jax.random.normal(jax.random.key(1), (n, size, size, 3))
    return model, np_init(model.init, x[:1]), x


@functools.partial(jax.jit, static_argnums=0)
def _grad_ref(apply, params, x, t):
    return jax.grad(lambda v: apply(params, v[None])[0, t])(x)


@pytest.mark.slow
def test_gradient_method_equals_jax_grad_for_each_target_kind():
    model, params, x = small()
    logits = np.asarray(model.apply(params, x))
    refs = np.stack([np.stack([np.asarray(_grad_ref(model.apply, params, x[i], t)) for t in range(3)])
                     for i in range(3)])  # (N, K, H, W, C)
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(backprop.gradient(model.apply, params, x[0], target=2)), refs[0, 2], **tol)
    np.testing.assert_allclose(np.asarray(backprop.gradient(model.apply, params, x, target=[0, 2, 1])),
                               refs[[0, 1, 2], [0, 2, 1]], **tol)
    pred = logits.argmax(-1)
    np.testing.assert_allclose(np.asarray(backprop.gradient(model.apply, params, x)), refs[np.arange(3), pred], **tol)
    np.testing.assert_allclose(np.asarray(backprop.gradient(model.apply, params, x, target="all")), refs, **tol)
    np.testing.assert_allclose(np.asarray(backprop.gradient(model.apply, params, x[1], target="all")), refs[1], **tol)


def test_all_classes_equal_one_class_at_a_time():
    model, params, x = small()
    for method in (backprop.deconvnet, backprop.guided_backprop):
        every = np.asarray(method(model.apply, params, x, target="all"))
        assert every.shape == (3, 3) + x.shape[1:]
        for t in range(3):
            np.testing.assert_allclose(every[:, t], np.asarray(method(model.apply, params, x, target=t)),
                                       rtol=1e-5, atol=1e-6)
        assert np.abs(every).max() > 0


def test_guided_is_deconvnet_masked_where_they_agree_in_sign():
    """Guided = relu(g)·[x>0] ⊂ deconvnet's support pattern: on a one-layer net it is exactly gradient ∧ deconvnet."""
    w = jnp.array([[1.0, -1.0, 2.0, -2.0]])
    apply = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], 1) * p) @ jnp.array([[1.0], [1.0], [-1.0], [1.0]])  # noqa: E731
    x = jnp.array([[[1.0]]])
    # relu input x·w = [1, -1, 2, -2]; upstream signal [1, 1, -1, 1]
    g = backprop.gradient(apply, w, x, target=0)  # Σ w·[xw>0]·s = 1·1 + 2·(−1) = −1
    d = backprop.deconvnet(apply, w, x, target=0)  # Σ w·relu(s) = 1 − 1 − 2 = −2
    gb = backprop.guided_backprop(apply, w, x, target=0)  # Σ w·relu(s)·[xw>0] = 1
    np.testing.assert_allclose(np.asarray([g, d, gb]).ravel(), [-1.0, -2.0, 1.0])


def test_methods_compose_with_jit_and_vmap():
    model, params, x = small()
    eager = np.asarray(backprop.deconvnet(model.apply, params, x, target=1))
    jitted = jax.jit(functools.partial(backprop.deconvnet, model.apply, target=1))(params, x)
    np.testing.assert_allclose(np.asarray(jitted), eager, rtol=1e-5, atol=1e-6)
    per_image = jax.vmap(lambda im: backprop.deconvnet(model.apply, params, im, target=1))(x)
    np.testing.assert_allclose(np.asarray(per_image), eager, rtol=1e-5, atol=1e-6)
    traced_targets = jax.jit(lambda t: backprop.guided_backprop(model.apply, params, x, target=t))(
        jnp.array([1, 1, 1]))
    np.testing.assert_allclose(np.asarray(traced_targets),
                               np.asarray(backprop.guided_backprop(model.apply, params, x, target=1)),
                               rtol=1e-5, atol=1e-6)


def test_bad_input_is_refused_with_a_clear_message():
    model, params, x = small()
    with pytest.raises(ValueError, match=r"`target` \(=3\).*\[0, 3\)"):
        backprop.deconvnet(model.apply, params, x, target=3)
    with pytest.raises(ValueError, match=r"`target` \('every'|`target` \(='every'\)"):
        backprop.deconvnet(model.apply, params, x, target="every")
    with pytest.raises(ValueError, match="one int per image"):
        backprop.deconvnet(model.apply, params, x, target=[0, 1])
    with pytest.raises(TypeError, match="`target`"):
        backprop.deconvnet(model.apply, params, x, target=1.5)
    with pytest.raises(ValueError, match=r"`image` \(shape=\(32, 32\)\)"):
        backprop.deconvnet(model.apply, params, x[0, ..., 0])
    with pytest.raises(TypeError, match="floating"):
        backprop.deconvnet(model.apply, params, x.astype(jnp.int32))
    with pytest.raises(TypeError, match="`apply_fn`"):
        backprop.deconvnet(None, params, x)
    with pytest.raises(ValueError, match=r"scores \(B, K\)"):
        backprop.deconvnet(lambda p, v: v, params, x)
    with pytest.raises(ValueError, match=r"`rule` \(='lrp'\)"):
        backprop.saliency_maps(model.apply, params, x, rule="lrp")
    with pytest.raises(ValueError, match=r"`layer` \(='conv9'\).*conv5"):
        backprop.project_units(model.apply, params, x, layer="conv9")
    with pytest.raises(ValueError, match=r"`top_k` \(=0\)"):
        backprop.project_units(model.apply, params, x, layer="conv2", top_k=0)


def _entry_points(model, params):
    """Every backprop entry point, as ``f(apply_fn, images (N, H, W, C))``."""
    return {
        "saliency_maps": lambda a, v: backprop.saliency_maps(a, params, v, target=0),
        "deconvnet": lambda a, v: backprop.deconvnet(a, params, v),
        "guided_backprop": lambda a, v: backprop.guided_backprop(a, params, v, target="all"),
        "gradient": lambda a, v: backprop.gradient(a, params, v[0]),
        "project_units": lambda a, v: backprop.project_units(a, params, v, layer="conv2", top_k=1),
        "top_activations": lambda a, v: backprop.top_activations(a, params, v, "conv2", [0], k=1),
    }


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_by_every_entry_point(bad):
    model, params, x = small()
    images = np.array(x)
    images[1, 5, 7, 2] = bad  # one pixel (in the image the single-image entry point does not read, too)
    images[0, 0, 0, 0] = bad
    messages = set()
    for name, call in _entry_points(model, params).items():
        with pytest.raises(ValueError, match=r"`image` contains non-finite values") as err:
            call(model.apply, jnp.asarray(images))
        messages.add(str(err.value))
    assert len(messages) == 1, messages  # the same words from every entry point


class _Unhashable:
    """A callable model that defines __eq__ without __hash__ (as dataclasses with eq=True do)."""

    def __init__(self, apply):
        self.apply = apply

    def __eq__(self, other):
        return isinstance(other, _Unhashable) and other.apply is self.apply

    def __call__(self, params, batch, **kw):
        return self.apply(params, batch, **kw)


def test_unhashable_apply_fn_and_layer_are_refused():
    model, params, x = small()
    for name, call in _entry_points(model, params).items():
        with pytest.raises(TypeError, match=r"`apply_fn` \(=.*\) must be hashable"):
            call(_Unhashable(model.apply), x)
    feats = backprop.layer_features(model.apply, "conv2")
    with pytest.raises(TypeError, match=r"`layer` \(=.*\) must be hashable"):
        backprop.project_units(model.apply, params, x, layer=_Unhashable(feats))
    with pytest.raises(TypeError, match=r"`layer` \(=.*\) must be hashable"):
        backprop.top_activations(model.apply, params, x, _Unhashable(feats), [0], k=1)


@functools.lru_cache(maxsize=None)
def _nan_at(cls):
    """A model whose logit ``cls`` is NaN: added after the network, so the backward signal itself is clean."""
    model, _, _ = small()
    return lambda p, v: model.apply(p, v) + jnp.where(jnp.arange(3) == cls, jnp.nan, 0.0)[None]


@pytest.mark.parametrize("rule", backprop.RULES)
def test_a_nan_score_gives_a_nan_map_for_every_rule(rule):
    model, params, x = small()
    broken = _nan_at(1)
    clean = np.asarray(backprop.saliency_maps(model.apply, params, x, target="all", rule=rule))
    every = np.asarray(backprop.saliency_maps(broken, params, x, target="all", rule=rule))
    assert np.isnan(every[:, 1]).all()
    np.testing.assert_array_equal(every[:, [0, 2]], clean[:, [0, 2]])  # finite scores: untouched maps
    one = np.asarray(backprop.saliency_maps(broken, params, x[0], target=1, rule=rule))
    assert np.isnan(one).all()
    predicted = np.asarray(backprop.saliency_maps(broken, params, x, rule=rule))  # argmax picks the NaN
    assert np.isnan(predicted).all()


def test_a_nan_inside_the_network_reaches_every_map():
    """A NaN weight in the last layer: the signal entering the ReLUs is NaN, and guided backprop used to
    drop it (``NaN > 0`` is False) and return a finite map. Every rule now gives a non-finite one."""
    model, params, x = small()
    params = jax.tree.map(jnp.asarray, params)  # a copy
    params["params"]["logits"]["kernel"] = params["params"]["logits"]["kernel"].at[0, 1].set(jnp.nan)
    for method in (backprop.deconvnet, backprop.guided_backprop, backprop.gradient):
        assert not np.isfinite(np.asarray(method(model.apply, params, x[0], target=1))).all(), method.__name__


def test_a_nan_activation_gives_a_nan_unit_map():
    model, params, x = small()
    feats = backprop.layer_features(model.apply, "conv2")
    poisoned = lambda p, v: feats(p, v).at[:, 1, 2, 3].set(jnp.nan)  # noqa: E731
    units = np.array([[1, 2, 3], [0, 0, 0]])
    out = backprop.project_units(model.apply, params, x[0], layer=poisoned, units=units)
    ref = backprop.project_units(model.apply, params, x[0], layer=feats, units=units)
    assert np.isnan(np.asarray(out.maps[0])).all()
    np.testing.assert_array_equal(np.asarray(out.maps[1]), np.asarray(ref.maps[1]))


# --------------------------------------------------------------------------------------------
# unit projections


def _activations(model, params, x, layer):
    _, state = model.apply(params, x, capture_intermediates=True, mutable=["intermediates"])
    return np.asarray(state["intermediates"][layer]["__call__"][0])


def test_project_units_top_k_against_brute_force():
    model, params, x = small()
    acts = _activations(model, params, x, "conv3")  # (N, h, w, c), the module outputs
    out = backprop.project_units(model.apply, params, x, layer="conv3", top_k=5)
    assert out.maps.shape == (3, 5) + x.shape[1:]
    for i in range(3):
        order = np.argsort(-acts[i].ravel(), kind="stable")[:5]
        np.testing.assert_allclose(np.asarray(out.values[i]), acts[i].ravel()[order], rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(out.units[i]), np.stack(np.unravel_index(order, acts[i].shape), -1))
    # each map is the deconvnet backward pass of "this unit's activation, zero elsewhere"
    feats = backprop.layer_features(model.apply, "conv3")
    f = backprop.with_rule(lambda p, v: feats(p, v[None])[0], "deconvnet", data_argnums=1)

    @jax.jit
    def one(v, idx, val):
        a, vjp = jax.vjp(lambda u: f(params, u), v)
        return vjp(jnp.zeros(a.size).at[idx].set(val).reshape(a.shape))[0]

    for i, r in [(0, 0), (2, 4)]:
        idx = np.ravel_multi_index(tuple(np.asarray(out.units[i, r])), acts[i].shape)
        np.testing.assert_allclose(np.asarray(out.maps[i, r]), np.asarray(one(x[i], idx, out.values[i, r])),
                                   rtol=1e-5, atol=1e-7)
        assert np.abs(np.asarray(out.maps[i, r])).max() > 0


def test_project_units_explicit_units_and_callable_layer():
    model, params, x = small()
    units = np.array([[1, 2, 3], [0, 0, 0]])
    by_name = backprop.project_units(model.apply, params, x[0], layer="conv2", units=units, rule="guided")
    acts = _activations(model, params, x[:1], "conv2")[0]
    np.testing.assert_allclose(np.asarray(by_name.values), acts[tuple(units.T)], rtol=1e-5)
    layer = lambda p, v: model.apply(p, v, capture_intermediates=True,  # noqa: E731
                                     mutable=["intermediates"])[1]["intermediates"]["conv2"]["__call__"][0]
    by_fn = backprop.project_units(model.apply, params, x[0], layer=layer, units=units, rule="guided")
    np.testing.assert_allclose(np.asarray(by_fn.maps), np.asarray(by_name.maps), rtol=1e-5, atol=1e-7)
    flat = backprop.project_units(model.apply, params, x[0], layer="conv2",
                                  units=np.ravel_multi_index(tuple(units.T), acts.shape), rule="guided")
    np.testing.assert_allclose(np.asarray(flat.maps), np.asarray(by_name.maps), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# dataset-level top 9


@pytest.mark.slow
def test_top_activations_images_values_and_receptive_fields():
    model, params, _ = small()
    images = jax.random.normal(jax.random.key(4), (7, 32, 32, 3))
    channels = [0, 3]
    res = backprop.top_activations(model.apply, params, images, "conv2", channels, k=3, batch_size=4)
    acts = _activations(model, params, images, "conv2")  # (7, 8, 8, c)
    for f, c in enumerate(channels):
        per_image = acts[..., c].reshape(7, -1).max(axis=1)
        order = np.argsort(-per_image, kind="stable")[:3]
        np.testing.assert_array_equal(np.asarray(res.image_index[f]), order)
        np.testing.assert_allclose(np.asarray(res.values[f]), per_image[order], rtol=1e-5)
        for r in range(3):
            i, j, ch = np.asarray(res.units[f, r])
            assert ch == c and acts[order[r], i, j, c] == pytest.approx(per_image[order[r]], rel=1e-5)
    # receptive field of conv2 (conv1 5×5/2 → pool 3×3/2 → conv2 3×3/1), by hand: 5 + (3−1)·2 +
    # (3−1)·2·2 = 17 pixels on a side; SAME padding puts conv1 unit u on pixels [2u−1, 2u+3],
    # pool unit q on conv1 units [2q, 2q+2] (pixels [4q−1, 4q+7]), conv2 unit i on pool units
    # [i−1, i+1]: pixels [4i−5, 4i+11].
    assert res.patches.shape == (2, 3, 17, 17, 3)
    for f in range(2):
        for r in range(3):
            i, j, _ = np.asarray(res.units[f, r])
            top, left = 4 * i - 5, 4 * j - 5
            want = np.array([max(top, 0), max(left, 0), min(top + 17, 32), min(left + 17, 32)])
            np.testing.assert_array_equal(np.asarray(res.boxes[f, r]), want)
            img = np.pad(np.asarray(images[int(res.image_index[f, r])]), ((17, 17), (17, 17), (0, 0)))
            np.testing.assert_array_equal(np.asarray(res.patches[f, r]),
                                          img[top + 17:top + 34, left + 17:left + 34])
            # the projection lives inside the receptive field
            proj = np.abs(np.asarray(res.projections[f, r])).sum(-1)
            inside = np.zeros_like(proj, bool)
            inside[want[0]:want[2], want[1]:want[3]] = True
            assert proj[~inside].max(initial=0.0) == 0.0 and proj[inside].max() > 0
    # the paper's layout: projections beside patches, per feature map
    fig = backprop.top_figure(res, rows=1, gap=2)
    assert fig.shape == (2, 17, 2 * (3 * 17 + 2 * 2) + 2, 3)
    np.testing.assert_array_equal(np.asarray(fig[:, :, -17:]), np.asarray(res.patches[:, 2]))
    np.testing.assert_array_equal(np.asarray(fig[:, :, 17:19]), 1.0)


def test_one_forward_pass_whatever_the_number_of_signals():
    """Count the convolutions in the traced program: 5 forward + 5 backward, for 1 class or all of them.

    If the forward pass were repeated per class (or per unit), the count would grow with K (or U).
    """
    from saliency_jax import jaxpr as jx

    model, params, x = small()

    def convs(fn):
        n = []
        jx.walk(jax.make_jaxpr(fn)(x), lambda e, f, p: n.append(1) if e.primitive.name == "conv_general_dilated" else None)
        return len(n)

    assert convs(lambda v: backprop.deconvnet(model.apply, params, v, target=1)) == 10
    assert convs(lambda v: backprop.deconvnet(model.apply, params, v, target="all")) == 10
    # from conv3: 5 forward (conv4/conv5 are traced, then dropped by XLA as dead code) + 3 backward,
    # for 1 unit or 6
    assert convs(lambda v: backprop.project_units(model.apply, params, v, layer="conv3", top_k=1).maps) == 8
    assert convs(lambda v: backprop.project_units(model.apply, params, v, layer="conv3", top_k=6).maps) == 8
