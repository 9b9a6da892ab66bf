"""One set of argument checks (``saliency_jax._validate``): the same bad input gets the same error,
the same exception type and the same message, from every entry point that takes an image."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj

HI = jax.lax.Precision.HIGHEST
SHAPE = (6, 5, 3)
K = 3


def _params():
    rng = np.random.default_rng(0)
    d = int(np.prod(SHAPE))
    return {
        "w1": jnp.asarray(rng.normal(size=(d, 7)) / np.sqrt(d), jnp.float32),
        "b1": jnp.asarray(rng.normal(size=(7,)) * 0.1, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(7, K)), jnp.float32),
    }


def hidden(p, x):
    """The tiny model's hidden layer: ``(B, H, W, C) -> (B, 7)``, after its ReLU."""
    return jax.nn.relu(jnp.dot(x.reshape(x.shape[0], -1), p["w1"], precision=HI) + p["b1"][None])


def tiny(p, x):
    """A two-layer ReLU network: ``(B, 6, 5, 3) -> (B, 3)`` logits."""
    return jnp.dot(hidden(p, x), p["w2"], precision=HI)


def shifted_input(p, x):
    """A layer with spatial activations ``(B, 6, 5, 3)`` for top_activations."""
    return jax.nn.relu(x + p["b1"][0])


class Unhashable:
    """A callable model that cannot key a compilation cache."""

    __hash__ = None

    def __call__(self, p, x):
        return tiny(p, x)


PARAMS = _params()
IMAGE = np.random.default_rng(1).uniform(size=SHAPE).astype(np.float32)


def _with(value, at=(2, 3, 1)):
    bad = IMAGE.copy()
    bad[at] = value
    return bad


# Every public function that takes (apply_fn, params, image): name -> call(apply_fn, image, target)
ENTRIES = {
    "occlusion": lambda f, x, t: sj.occlusion(f, PARAMS, x, window=2, stride=2, target=t),
    "occlusion crop": lambda f, x, t: sj.occlusion(f, PARAMS, x, window=2, stride=2, target=t, mode="crop"),
    "capped_occlusion": lambda f, x, t: sj.incremental.capped_occlusion(f, PARAMS, x, window=2, stride=2, target=t,
                                                                        cap=0.5),
    "deconvnet": lambda f, x, t: sj.deconvnet(f, PARAMS, x, target=t),
    "guided_backprop": lambda f, x, t: sj.guided_backprop(f, PARAMS, x, target=t),
    "gradient": lambda f, x, t: sj.gradient(f, PARAMS, x, target=t),
    "saliency_maps": lambda f, x, t: sj.saliency_maps(f, PARAMS, x, t),
    "project_units": lambda f, x, t: sj.project_units(f, PARAMS, x, layer=hidden, top_k=2),  # takes no target
}
TAKES_TARGET = [name for name in ENTRIES if name != "project_units"]

# case -> (apply_fn, image, target, expected exception type, argument the message must name)
CASES = {
    "integer image": (tiny, (IMAGE * 255).astype(np.uint8), 0, TypeError, "`image`"),
    "rank-2 image": (tiny, IMAGE[..., 0], 0, ValueError, "`image`"),
    "empty axis": (tiny, np.zeros((0, 5, 3), np.float32), 0, ValueError, "`image`"),
    "NaN pixel": (tiny, _with(np.nan), 0, ValueError, "`image`"),
    "inf pixel": (tiny, _with(-np.inf), 0, ValueError, "`image`"),
    "target 'bogus'": (tiny, IMAGE, "bogus", ValueError, "`target`"),
    "target out of range": (tiny, IMAGE, K, ValueError, "`target`"),
    "bool target": (tiny, IMAGE, True, TypeError, "`target`"),
    "wrong-length target list": (tiny, IMAGE, [0, 1], ValueError, "`target`"),
    "non-callable apply_fn": ("model", IMAGE, 0, TypeError, "`apply_fn`"),
    "unhashable apply_fn": (Unhashable(), IMAGE, 0, TypeError, "`apply_fn`"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_bad_input_gets_the_same_error_everywhere(case):
    apply_fn, image, target, error, argument = CASES[case]
    entries = TAKES_TARGET if argument == "`target`" else list(ENTRIES)
    raised = {}
    for name in entries:
        try:
            ENTRIES[name](apply_fn, image, target)
        except (TypeError, ValueError) as e:
            raised[name] = (type(e).__name__, str(e))
        else:
            raised[name] = ("no error", "")
    expected = raised["occlusion"]
    assert expected[0] == error.__name__ and argument in expected[1], expected
    differ = {name: got for name, got in raised.items() if got != expected}
    assert not differ, f"sj.occlusion raised {expected}; these entry points raised otherwise: {differ}"


@pytest.mark.parametrize("name", list(ENTRIES))
def test_a_good_input_passes(name):
    out = ENTRIES[name](tiny, IMAGE, 1)
    out = out.maps if name == "project_units" else out
    expected = {"occlusion": SHAPE[:2], "occlusion crop": SHAPE[:2], "capped_occlusion": SHAPE[:2],
                "project_units": (2, *SHAPE)}.get(name, SHAPE)
    assert out.shape == expected and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all() and np.abs(np.asarray(out)).max() > 0


# ------------------------------------------------------------------ params leaves (issue 14, item 7)
# project_units and top_activations count no classes; they need their own _validate.params call
BAD_PARAMS = {**PARAMS, "meta": {"name": "tiny"}}


def _entry_with_params(name, params):
    calls = {
        "occlusion": lambda: sj.occlusion(tiny, params, IMAGE, window=2, stride=2, target=0),
        "occlusion crop": lambda: sj.occlusion(tiny, params, IMAGE, window=2, stride=2, target=0, mode="crop"),
        "capped_occlusion": lambda: sj.incremental.capped_occlusion(tiny, params, IMAGE, window=2, stride=2,
                                                                    target=0, cap=0.5),
        "deconvnet": lambda: sj.deconvnet(tiny, params, IMAGE, target=0),
        "guided_backprop": lambda: sj.guided_backprop(tiny, params, IMAGE, target=0),
        "gradient": lambda: sj.gradient(tiny, params, IMAGE, target=0),
        "saliency_maps": lambda: sj.saliency_maps(tiny, params, IMAGE, 0),
    }
    return calls[name]()


@pytest.mark.parametrize("name", TAKES_TARGET)
def test_a_params_leaf_that_is_not_an_array_is_named_with_its_path(name):
    with pytest.raises(TypeError) as err:
        _entry_with_params(name, BAD_PARAMS)
    msg = str(err.value)
    assert "`params`" in msg and "['meta']['name']" in msg and "'tiny'" in msg, msg


@pytest.mark.parametrize("call", [
    lambda p: sj.project_units(tiny, p, IMAGE, layer=hidden, top_k=2),
    lambda p: sj.top_activations(tiny, p, np.stack([IMAGE, IMAGE]), shifted_input, channels=[0], k=1),
], ids=["project_units", "top_activations"])
def test_unit_projections_name_a_bad_params_leaf_too(call):
    # They count no classes (so num_classes does not check params for them): their own check.
    call(PARAMS)  # a good pytree runs
    with pytest.raises(TypeError, match=r"`params` leaf \['meta'\]\['name'\]"):
        call(BAD_PARAMS)


def test_params_check_accepts_arrays_numbers_and_keys_and_refuses_the_rest():
    from saliency_jax import _validate

    good = {"a": np.zeros(2, np.float32), "b": 1.5, "c": 3, "d": np.bool_(True), "e": jnp.ones(2, jnp.bfloat16),
            "k": jax.random.key(0), "none": None}
    assert _validate.params(good) is good
    for bad, path in [({"w": "abc"}, "['w']"), ({"w": [np.zeros(1), np.array(["x"])]}, "['w'][1]"),
                      ({"w": np.zeros(2, object)}, "['w']"), ({"f": len}, "['f']")]:
        with pytest.raises(TypeError, match=r"`params` leaf " + re.escape(path)):
            _validate.params(bad)
