"""Reader for dlib's serialized DNN files (`*.dat` from `dlib::serialize(net)`): `read_dlib_dat(path) -> DlibNet`.

Supports the metric-learning nets (`loss_metric_2` over `input_rgb_image_sized`) such as dlib's face-recognition
ResNet; numpy only, no torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from edgepipe.errors import WeightImportError

__all__ = ["DlibLayer", "DlibNet", "read_dlib_dat"]

# Layout of a file, as read from the bytes of dlib_face_recognition_resnet_model_v1.dat:
#   loss record: int version 1, str 'loss_metric_2', float margin, float distance threshold
#   one int version per wrapper, top of the net first: 2 = layer, 1 = tag/skip, 3 = the layer on the input
#   input record: str 'input_rgb_image_sized', float x3 mean RGB, int rows, int cols
#   layer records, bottom (input side) first: str tag, the layer's own fields, then the training state of its
#   wrapper (3 bool chars, 3 tensors; plus int sample_expansion_factor for the version-3 wrapper)
# Tag/skip wrappers have no record of their own: only their version int in the prefix.

_LOSS_NAME = "loss_metric_2"
_INPUT_NAME = "input_rgb_image_sized"
_TENSOR_VERSION = 2  # version 1 stored each float as a var-int pair; the version-2 data is raw little-endian f32
_ALIAS_VERSION = 1
_WRAPPER_VERSION_LAYER, _WRAPPER_VERSION_TAG, _WRAPPER_VERSION_INPUT = 2, 1, 3
# dlib's float_details marks the non-finite values with these exponents
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_FC_HAS_BIAS = 0  # fc bias_mode; 1 is FC_NO_BIAS


@dataclass(frozen=True)
class DlibLayer:
    """One computational layer of a dlib net, with its packed `params` tensor unpacked into named arrays."""

    kind: str  # dlib's record tag: 'con_4', 'affine_', 'relu_', 'max_pool_2', 'avg_pool_2', 'add_prev_', 'fc_2'
    offset: int  # byte offset of the record's tag string in the file
    params: Mapping[str, np.ndarray] = field(default_factory=dict)  # float32, e.g. con 'weight' (O, I, kh, kw)
    attrs: Mapping[str, int | float] = field(default_factory=dict)  # e.g. 'stride_y', 'padding_x', 'nr', 'nc'
    wrappers_below: int = 0  # tag/skip layers between this layer and the one below (dlib stores nothing else)

    @property
    def num_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())


@dataclass(frozen=True)
class DlibNet:
    """A parsed metric-learning net: the loss and input records plus the layers, bottom (input side) first."""

    loss: str  # 'loss_metric_2'
    margin: float  # training margin of the metric loss (0.04 for the face net)
    threshold: float  # Euclidean distance below which two embeddings are the same identity (0.6)
    input_mean_rgb: tuple[float, float, float]  # subtracted from 0-255 pixels; dlib then divides by 256
    input_hw: tuple[int, int]  # (150, 150)
    layers: tuple[DlibLayer, ...]  # file order == bottom to top

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)


def read_dlib_dat(path: str | os.PathLike[str]) -> DlibNet:
    """Parse a dlib DNN file into its header and layer parameters.

    Args:
        path: a `.dat` written by `dlib::serialize(net)` for a `loss_metric` net over `input_rgb_image_sized`.

    Returns:
        The header fields and the 108 (for the face net) layers, bottom first, params as read-only float32 arrays.

    Raises:
        WeightImportError: the file cannot be read, or it is malformed (truncated, wrong loss/input name, unknown
            layer tag, inconsistent tensor sizes, trailing bytes); the message names the byte offset.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as e:
        raise WeightImportError(f"cannot read dlib net {os.fspath(path)!r}: {e.strerror or e}") from e
    return _parse(_Reader(data, os.fspath(path)))


class _Reader:
    """Cursor over the bytes of one file; every failure names the file and the byte offset."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name, self.pos = data, name, 0

    def fail(self, expected: str, found: str, at: int | None = None) -> WeightImportError:
        at = self.pos if at is None else at
        return WeightImportError(f"malformed dlib net {self.name!r} at byte {at}: expected {expected}, found {found}")

    def take(self, count: int, what: str) -> bytes:
        if count > len(self.data) - self.pos:
            raise self.fail(f"{count} bytes of {what}", f"end of file after {len(self.data) - self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def int_(self, what: str = "an integer") -> int:
        """dlib var-int: control byte (bit 7 = negative, low nibble = byte count), then little-endian magnitude."""
        start = self.pos
        control = self.take(1, what)[0]
        count = control & 0x0F
        if control & 0x70 or count > 8:
            raise self.fail(f"{what} (var-int control byte)", f"0x{control:02x}", at=start)
        magnitude = int.from_bytes(self.take(count, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def float_(self, what: str) -> float:
        """dlib float_details: var-int mantissa, then var-int base-2 exponent."""
        start = self.pos
        mantissa, exponent = self.int_(f"mantissa of {what}"), self.int_(f"exponent of {what}")
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(f"{what} in float range", f"{mantissa} * 2**{exponent}", at=start) from None

    def str_(self, what: str, max_len: int = 256) -> str:
        start = self.pos
        length = self.int_(f"length of {what}")
        if not 0 <= length <= max_len:
            raise self.fail(f"{what} of 0..{max_len} chars", f"length {length}", at=start)
        raw = self.take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} in ASCII", repr(raw[:32]), at=start) from None

    def bool_(self, what: str) -> bool:
        start = self.pos
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            raise self.fail(f"{what} as '0' or '1'", repr(char), at=start)
        return char == b"1"

    def version(self, expected: int, what: str) -> None:
        start = self.pos
        found = self.int_(f"{what} version")
        if found != expected:
            raise self.fail(f"{what} version {expected}", str(found), at=start)

    def shape(self, rank: int, what: str) -> tuple[int, ...]:
        start = self.pos
        dims = tuple(self.int_(f"{what} dimension") for _ in range(rank))
        if any(d < 0 for d in dims):
            raise self.fail(f"non-negative {what} dimensions", str(dims), at=start)
        return dims

    def tensor(self, what: str) -> np.ndarray:
        """A dlib tensor: version 2, (num_samples, k, nr, nc), then the elements as raw float32 LE."""
        self.version(_TENSOR_VERSION, what)
        dims = self.shape(4, what)
        count = math.prod(dims)
        raw = self.take(4 * count, f"{what} data ({dims} float32)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_shape(self, what: str) -> tuple[int, int, int, int]:
        """dlib alias_tensor: the shape of one slice of a layer's packed params; its offset is not stored."""
        self.version(_ALIAS_VERSION, what)
        return self.shape(4, what)  # type: ignore[return-value]


def _frozen(params: dict[str, np.ndarray], attrs: dict[str, int | float]) -> tuple[Mapping, Mapping]:
    for array in params.values():
        array.flags.writeable = False
    return MappingProxyType(params), MappingProxyType(attrs)


def _unpack(reader: _Reader, packed: np.ndarray, at: int, slices: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a layer's flat params into its alias slices, laid out back to back in declaration order."""
    flat = packed.reshape(-1)
    need = sum(math.prod(shape) for shape in slices.values())
    if need != flat.size:
        detail = " + ".join(f"{name} {shape}" for name, shape in slices.items())
        raise reader.fail(f"a params tensor of {need} floats ({detail})", f"{flat.size}", at=at)
    out, start = {}, 0
    for name, shape in slices.items():
        size = math.prod(shape)
        if size:
            out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _multipliers(reader: _Reader) -> dict[str, float]:
    names = ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
             "bias_weight_decay_multiplier")
    return {name: reader.float_(name) for name in names}


def _read_con(reader: _Reader) -> tuple[dict, dict]:
    at = reader.pos
    packed = reader.tensor("con params")
    names = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    attrs: dict[str, int | float] = {name: reader.int_(f"con {name}") for name in names}
    shape_at = reader.pos
    weight_shape = reader.alias_shape("con filters")  # (O, I, kh, kw): already PyTorch's OIHW
    bias_shape = reader.alias_shape("con biases")
    want = (attrs["num_filters"], weight_shape[1], attrs["nr"], attrs["nc"])
    if weight_shape != want or bias_shape not in ((1, attrs["num_filters"], 1, 1), (0, 0, 0, 0)):
        raise reader.fail(f"con filters {want} and biases (1, {attrs['num_filters']}, 1, 1)",
                          f"{weight_shape} and {bias_shape}", at=shape_at)
    attrs.update(_multipliers(reader))
    return _unpack(reader, packed, at, {"weight": weight_shape, "bias": (math.prod(bias_shape),)}), attrs


def _read_affine(reader: _Reader) -> tuple[dict, dict]:
    at = reader.pos
    packed = reader.tensor("affine params")
    gamma, beta = reader.alias_shape("affine gamma"), reader.alias_shape("affine beta")
    attrs: dict[str, int | float] = {"mode": reader.int_("affine mode")}  # 0: per channel, 1: per element
    if gamma != beta:
        raise reader.fail("affine gamma and beta of one shape", f"{gamma} and {beta}", at=at)
    return _unpack(reader, packed, at, {"gamma": (math.prod(gamma),), "beta": (math.prod(beta),)}), attrs


def _read_pool(reader: _Reader) -> tuple[dict, dict]:
    names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")  # nr = nc = 0: the whole image
    return {}, {name: reader.int_(f"pool {name}") for name in names}


def _read_fc(reader: _Reader) -> tuple[dict, dict]:
    attrs: dict[str, int | float] = {"num_outputs": reader.int_("fc num_outputs"),
                                     "num_inputs": reader.int_("fc num_inputs")}
    at = reader.pos
    packed = reader.tensor("fc params")
    shape_at = reader.pos
    weight_shape, bias_shape = reader.alias_shape("fc weights"), reader.alias_shape("fc biases")
    attrs["bias_mode"] = reader.int_("fc bias_mode")
    n_in, n_out = attrs["num_inputs"], attrs["num_outputs"]
    want_bias = (1, n_out, 1, 1) if attrs["bias_mode"] == _FC_HAS_BIAS else (0, 0, 0, 0)
    if weight_shape != (n_in, n_out, 1, 1) or bias_shape != want_bias or attrs["bias_mode"] not in (0, 1):
        raise reader.fail(f"fc weights ({n_in}, {n_out}, 1, 1), biases {want_bias}, bias_mode 0 or 1",
                          f"{weight_shape}, {bias_shape}, bias_mode {attrs['bias_mode']}", at=shape_at)
    attrs.update(_multipliers(reader))
    # weight stays as stored, (num_inputs, num_outputs): dlib computes x @ W, so nn.Linear needs W.T
    return _unpack(reader, packed, at, {"weight": (n_in, n_out), "bias": (math.prod(bias_shape),)}), attrs


def _read_nothing(reader: _Reader) -> tuple[dict, dict]:
    return {}, {}


_LAYER_READERS: Mapping[str, Callable[[_Reader], tuple[dict, dict]]] = MappingProxyType({
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": _read_nothing,
    "add_prev_": _read_nothing,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
})


def _skip_wrapper_state(reader: _Reader, on_input: bool) -> None:
    """The add_layer's training state (flags, gradients, cached output): not parameters, so read and dropped."""
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        reader.bool_(flag)
    for what in ("x_grad", "cached_output", "params_grad"):
        reader.tensor(what)
    if on_input:
        reader.int_("sample_expansion_factor")


def _parse(reader: _Reader) -> DlibNet:
    reader.version(1, "loss layer")
    loss_at = reader.pos
    loss = reader.str_("loss name")
    if loss != _LOSS_NAME:
        raise reader.fail(repr(_LOSS_NAME), repr(loss), at=loss_at)
    margin, threshold = reader.float_("loss margin"), reader.float_("loss distance threshold")

    # Wrapper versions, top first; the one on the input layer (3) closes the list.
    wrappers: list[int] = []
    while not wrappers or wrappers[-1] != _WRAPPER_VERSION_INPUT:
        at = reader.pos
        version = reader.int_("layer wrapper version")
        if version not in (_WRAPPER_VERSION_LAYER, _WRAPPER_VERSION_TAG, _WRAPPER_VERSION_INPUT):
            raise reader.fail("a layer wrapper version 1, 2 or 3", str(version), at=at)
        wrappers.append(version)
    bottom_up = wrappers[::-1]

    input_at = reader.pos
    input_name = reader.str_("input layer name")
    if input_name != _INPUT_NAME:
        raise reader.fail(repr(_INPUT_NAME), repr(input_name), at=input_at)
    mean_rgb = (reader.float_("input mean red"), reader.float_("input mean green"), reader.float_("input mean blue"))
    input_hw = (reader.int_("input rows"), reader.int_("input cols"))

    layers, tags_pending = [], 0
    for version in bottom_up:
        if version == _WRAPPER_VERSION_TAG:
            tags_pending += 1
            continue
        at = reader.pos
        kind = reader.str_("layer tag")
        if kind not in _LAYER_READERS:
            raise reader.fail(f"a layer tag in {sorted(_LAYER_READERS)}", repr(kind), at=at)
        params, attrs = _frozen(*_LAYER_READERS[kind](reader))
        _skip_wrapper_state(reader, on_input=version == _WRAPPER_VERSION_INPUT)
        layers.append(DlibLayer(kind, at, params, attrs, wrappers_below=tags_pending))
        tags_pending = 0
    if tags_pending:
        raise reader.fail("a layer record above the last tag/skip wrapper", f"{tags_pending} dangling wrappers")
    if reader.pos != len(reader.data):
        raise reader.fail("end of file", f"{len(reader.data) - reader.pos} trailing bytes")
    return DlibNet(loss, margin, threshold, mean_rgb, input_hw, tuple(layers))
