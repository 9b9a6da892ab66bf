"""Read a PyTorch state dict saved in torch's *legacy* serialization, without torch.

``torch.save(..., _use_new_zipfile_serialization=False)`` (and every ``torch.save`` before
PyTorch 1.6) writes one stream:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. a pickle of the protocol version (``1001``);
3. a pickle of ``sys_info`` (``little_endian``, ``type_sizes``);
4. the pickle of the object itself, where every tensor is
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` and
   every storage a *persistent id* ``("storage", torch.FloatStorage, key, location, numel, None)``;
5. a pickle of the list of storage keys, in the order their bytes follow;
6. per storage: its element count (int64, little-endian), then its raw bytes.

:func:`read_state_dict` reads that stream with a *restricted* unpickler: the only globals it
resolves are ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` (and
``_rebuild_parameter``) and torch's typed storage classes (``torch.FloatStorage`` …), each
to an inert stand-in defined here; any other global (``os.system``, ``builtins.eval``, a model
class …) is refused with :class:`UnsafePickleError` before anything is called. torch is never
imported. The newer zip layout (``torch.save``'s default since 1.6) is refused with a message
naming it: it is not what the weight wheels ship.

Example:
    >>> import io, pickle
    >>> try:
    ...     read_state_dict(io.BytesIO(pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2) + b"junk"))
    ... except LegacyFormatError as err:
    ...     print("refused")
    refused
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["MAGIC_NUMBER", "PROTOCOL_VERSION", "STORAGE_DTYPES", "LegacyFormatError", "UnsafePickleError",
           "read_state_dict", "file_sha256"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: torch's typed storage class names and the numpy dtype of their elements (little-endian).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class LegacyFormatError(ValueError):
    """The stream is not a (complete, well-formed) torch legacy-serialized object."""


class UnsafePickleError(LegacyFormatError):
    """The pickle names a global outside the few a state dict needs; nothing was executed."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """A storage announced by a persistent id; its bytes are read after the pickle."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns here: a view, resolved once the storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def resolve(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise LegacyFormatError(f"storage {self.storage.key!r} was never read (truncated file?)")
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        if any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise LegacyFormatError(f"tensor with negative size {size} or stride {stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else self.offset - 1
        if self.offset < 0 or last >= data.size:
            raise LegacyFormatError(
                f"tensor (offset {self.offset}, size {size}, stride {stride}) reaches past its storage "
                f"{self.storage.key!r} of {data.size} elements")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=size, strides=tuple(s * data.itemsize for s in stride), writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise LegacyFormatError(f"_rebuild_tensor_v2 got a {type(storage).__name__}, not a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise LegacyFormatError(f"_rebuild_tensor_v2 got size {size!r} and stride {stride!r}")
    return _TensorRef(storage, int(storage_offset), size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict[str, _Storage] | None):
        super().__init__(f, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"the pickle names the global {module}.{name}; a state dict only needs "
            f"collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch storage types: refused")

    def persistent_load(self, pid):
        if self._storages is None:
            raise LegacyFormatError("a persistent id in the header pickles")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise LegacyFormatError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise LegacyFormatError(f"persistent id names {storage_type!r:.60}, not a torch storage type")
        if view_metadata is not None:
            raise LegacyFormatError("storage views (pre-1.0 torch files) are not supported")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise LegacyFormatError(f"malformed storage id {pid!r:.80}")
        if key in self._storages:
            known = self._storages[key]
            if known.dtype != storage_type.dtype or known.numel != numel:
                raise LegacyFormatError(f"storage {key!r} announced twice with different types or sizes")
            return known
        storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        return storage


def _load_pickle(f: BinaryIO, storages=None):
    try:
        return _RestrictedUnpickler(f, storages).load()
    except LegacyFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, UnicodeDecodeError) as err:
        raise LegacyFormatError(f"not a torch legacy file, or a truncated one ({type(err).__name__}: {err})") from err


def _resolve(obj):
    if isinstance(obj, _TensorRef):
        return obj.resolve()
    if isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
        return out
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(source: str | os.PathLike | BinaryIO) -> "collections.OrderedDict[str, np.ndarray]":
    """The tensors of a torch legacy-serialized state dict, as numpy arrays (no torch needed).

    Args:
        source: a path or a binary file object positioned at the start of the stream.

    Returns:
        An ``OrderedDict`` ``{name: np.ndarray}`` in the file's order; each array is a C-contiguous
        copy in native byte order with the tensor's shape and dtype (``float32`` for
        ``FloatStorage``, ``int64`` for ``LongStorage`` …). A non-contiguous tensor (e.g. a weight
        stored in TF's layout with permuted strides) is gathered through its strides.

    Raises:
        UnsafePickleError: the pickle names any global other than ``collections.OrderedDict``,
            ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and torch storage types
            (nothing is executed).
        LegacyFormatError: not a legacy torch file (wrong magic number or protocol, a zip-layout
            file, a big-endian file), a truncated file, or a tensor reaching past its storage.
        TypeError: ``source`` is neither a path nor a binary file object.

    Example:
        >>> sd = read_state_dict(path_to_pth)                       # doctest: +SKIP
        >>> sd["_conv_stem.weight"].shape, sd["_conv_stem.weight"].dtype   # doctest: +SKIP
        ((32, 3, 3, 3), dtype('float32'))
    """
    if isinstance(source, (str, os.PathLike)):
        if zipfile.is_zipfile(source):
            raise LegacyFormatError(
                f"{str(source)!r} is in torch's zip serialization (torch.save's default since 1.6); "
                "this reader takes the legacy layout only")
        with open(source, "rb") as f:
            return read_state_dict(f)
    if not (hasattr(source, "read") and hasattr(source, "seek")):
        raise TypeError(f"`source` (type {type(source).__name__}) must be a path or a binary file object")
    f = source
    magic = _load_pickle(f)
    if magic != MAGIC_NUMBER:
        raise LegacyFormatError(f"wrong magic number {magic!r:.40}: not a torch legacy file")
    protocol = _load_pickle(f)
    if protocol != PROTOCOL_VERSION:
        raise LegacyFormatError(f"unsupported torch protocol version {protocol!r:.40} (reads {PROTOCOL_VERSION})")
    sys_info = _load_pickle(f)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise LegacyFormatError(f"only little-endian files are read (sys_info {sys_info!r:.120})")
    storages: dict[str, _Storage] = {}
    obj = _load_pickle(f, storages)
    keys = _load_pickle(f)
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise LegacyFormatError("the storage key list does not match the storages the object refers to")
    for key in keys:
        storage = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise LegacyFormatError(f"truncated file: storage {key!r} has no size header")
        (numel,) = struct.unpack("<q", head)
        if numel != storage.numel:
            raise LegacyFormatError(f"storage {key!r}: {numel} elements on disk, {storage.numel} announced")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise LegacyFormatError(f"truncated file: storage {key!r} has {len(raw)} of {nbytes} bytes")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    out = _resolve(obj)
    if not isinstance(out, dict):
        raise LegacyFormatError(f"the file holds a {type(out).__name__}, not a state dict")
    bad = [k for k, v in out.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise LegacyFormatError(f"not a state dict of tensors: entries {bad[:5]}")
    return out
