"""read_dlib_dat on tiny hand-built dlib byte streams: var-ints, floats, tensors, layer records and malformed input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.dlib_dat import _Reader, read_dlib_dat

# A private encoder for dlib's format, the mirror of what the reader expects.


def _int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
    return _int(int(mantissa * 2**24)) + _int(exponent - 24)


def _str(text: str) -> bytes:
    return _int(len(text)) + text.encode("ascii")


def _tensor(array: np.ndarray) -> bytes:
    dims = array.reshape(array.shape + (1,) * (4 - array.ndim)).shape
    return _int(2) + b"".join(_int(d) for d in dims) + array.astype("<f4").tobytes()


def _alias(*dims: int) -> bytes:
    return _int(1) + b"".join(_int(d) for d in dims)


def _wrapper_state(on_input: bool = False) -> bytes:
    empty = _tensor(np.zeros((0, 0, 0, 0), np.float32))
    return b"110" + empty * 3 + (_int(1) if on_input else b"")


def _con(weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> bytes:
    out_ch, in_ch, kh, kw = weight.shape
    packed = np.concatenate([weight.ravel(), bias.ravel()])[:, None, None, None]
    fields = [out_ch, kh, kw, stride, stride, padding, padding]
    return (_str("con_4") + _tensor(packed) + b"".join(_int(v) for v in fields)
            + _alias(out_ch, in_ch, kh, kw) + _alias(1, out_ch, 1, 1) + b"".join(_float(v) for v in (1, 1, 1, 0)))


def _fc(weight_in_out: np.ndarray) -> bytes:
    n_in, n_out = weight_in_out.shape
    return (_str("fc_2") + _int(n_out) + _int(n_in) + _tensor(weight_in_out[:, :, None, None])
            + _alias(n_in, n_out, 1, 1) + _alias(0, 0, 0, 0) + _int(1) + b"".join(_float(v) for v in (1, 1, 1, 0)))


def _net(loss: str = "loss_metric_2", layer_tag: str = "relu_", mean=(122.782, 117.001, 104.298)) -> bytes:
    """con_4 -> tag -> <layer_tag> -> fc_2, as dlib writes it: wrapper versions top first, then records bottom first."""
    rng = np.random.default_rng(0)
    header = _int(1) + _str(loss) + _float(0.04) + _float(-0.6)
    versions = b"".join(_int(v) for v in (2, 2, 1, 3))
    input_record = _str("input_rgb_image_sized") + b"".join(_float(v) for v in mean) + _int(6) + _int(5)
    conv = _con(rng.standard_normal((2, 3, 3, 3), np.float32), np.array([0.5, -0.5], np.float32), 2, 0)
    fc = _fc(rng.standard_normal((2, 4), np.float32))
    return (header + versions + input_record + conv + _wrapper_state(on_input=True)
            + _str(layer_tag) + _wrapper_state() + fc + _wrapper_state())


@pytest.fixture
def write(tmp_path):
    def _write(data: bytes):
        path = tmp_path / "net.dat"
        path.write_bytes(data)
        return path

    return _write


@pytest.mark.parametrize("value", [0, 1, 127, 255, 256, 65535, 2**40, -1, -2, -300, -(2**40)])
def test_int_round_trips_including_negatives(value):
    assert _Reader(_int(value), "<bytes>").int_() == value


def test_int_reads_dlib_bytes_literally():
    # 0x82 = negative, 2 bytes follow: 0x012c = 300; 0x01 0x00 is how dlib writes 0
    reader = _Reader(bytes([0x82, 0x2C, 0x01, 0x01, 0x00, 0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]), "<bytes>")
    assert (reader.int_(), reader.int_(), reader.float_("margin")) == (-300, 0, pytest.approx(0.04))


def test_int_rejects_a_bad_control_byte():
    with pytest.raises(WeightImportError, match=r"at byte 0: expected .*control byte.*found 0x19"):
        _Reader(bytes([0x19]), "<bytes>").int_()


def test_reads_header_and_layers_bottom_first(write):
    net = read_dlib_dat(write(_net()))
    assert (net.loss, net.input_hw) == ("loss_metric_2", (6, 5))
    assert net.margin == pytest.approx(0.04) and net.threshold == pytest.approx(-0.6)
    assert net.input_mean_rgb == pytest.approx((122.782, 117.001, 104.298))
    assert [layer.kind for layer in net.layers] == ["con_4", "relu_", "fc_2"]
    assert [layer.wrappers_below for layer in net.layers] == [0, 1, 0]
    con, _, fc = net.layers
    assert con.params["weight"].shape == (2, 3, 3, 3) and con.params["bias"].tolist() == [0.5, -0.5]
    assert (con.attrs["stride_y"], con.attrs["padding_x"], con.attrs["bias_weight_decay_multiplier"]) == (2, 0, 0.0)
    assert fc.params["weight"].shape == (2, 4) and "bias" not in fc.params
    assert net.num_params == 2 * 3 * 9 + 2 + 8
    assert not con.params["weight"].flags.writeable


def test_truncated_stream_names_the_offset(write):
    data = _net()
    for cut in (0, 3, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(WeightImportError, match=r"net\.dat' at byte \d+: expected .*found end of file"):
            read_dlib_dat(write(data[:cut]))


def test_unknown_layer_tag(write):
    data = _net(layer_tag="bn_con")
    with pytest.raises(WeightImportError, match=r"at byte \d+: expected a layer tag in \[.*'relu_'.*found 'bn_con'"):
        read_dlib_dat(write(data))


def test_wrong_loss_name(write):
    with pytest.raises(WeightImportError, match=r"at byte 2: expected 'loss_metric_2', found 'loss_mmod_'"):
        read_dlib_dat(write(_net(loss="loss_mmod_")))


def test_trailing_garbage(write):
    with pytest.raises(WeightImportError, match=r"expected end of file, found 3 trailing bytes"):
        read_dlib_dat(write(_net() + b"xyz"))


def test_params_count_must_match_the_aliases(write):
    weight, bias = np.zeros((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)
    good_params = _tensor(np.concatenate([weight.ravel(), bias.ravel()])[:, None, None, None])
    bad_params = _tensor(np.zeros((57, 1, 1, 1), np.float32))  # one float more than 2x3x3x3 filters + 2 biases
    con = _con(weight, bias, 1, 1).replace(good_params, bad_params)
    stream = (_int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6) + _int(3)
              + _str("input_rgb_image_sized") + _float(1.0) * 3 + _int(4) + _int(4) + con + _wrapper_state(True))
    with pytest.raises(WeightImportError, match=r"expected a params tensor of 56 floats \(weight \(2, 3, 3, 3\) \+ "
                                                r"bias \(2,\)\), found 57"):
        read_dlib_dat(write(stream))


def test_face_net_round_trip_through_dlib_state_dict(write):
    """A random DlibResNet29, written the way dlib would, reads back key for key (fc transposed)."""
    import torch

    from edgepipe.models.zoo.dlib_resnet import DlibResNet29, _layer_plan, dlib_state_dict

    torch.manual_seed(0)
    model = DlibResNet29()
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    versions, records = [], []
    for index, (kind, prefix, geometry, wrappers) in enumerate(_layer_plan(model)):
        versions += [1] * wrappers + [3 if index == 0 else 2]
        if kind == "con_4":
            weight, bias = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
            records.append(_con(weight, bias, geometry["stride_y"], geometry["padding_y"]))
        elif kind == "affine_":
            gamma, beta = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
            packed = _tensor(np.concatenate([gamma, beta])[:, None, None, None])
            records.append(_str(kind) + packed + _alias(1, gamma.size, 1, 1) * 2 + _int(0))
        elif kind.endswith("pool_2"):
            records.append(_str(kind) + b"".join(_int(geometry[name]) for name in
                                                 ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")))
        elif kind == "fc_2":
            records.append(_fc(state[f"{prefix}.weight"].T.copy()))
        else:
            records.append(_str(kind))
        records.append(_wrapper_state(on_input=index == 0))
    stream = (_int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6) + b"".join(_int(v) for v in versions[::-1])
              + _str("input_rgb_image_sized") + _float(122.782) + _float(117.001) + _float(104.298) + _int(150)
              + _int(150) + b"".join(records))

    net = read_dlib_dat(write(stream))
    loaded = dlib_state_dict(net)
    assert len(net.layers) == 108 and net.num_params == 5_614_592
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value, err_msg=key)


def test_missing_file_is_a_weight_import_error(tmp_path):
    with pytest.raises(WeightImportError, match=r"cannot read dlib net .*nope\.dat"):
        read_dlib_dat(tmp_path / "nope.dat")
