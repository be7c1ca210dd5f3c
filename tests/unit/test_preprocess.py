import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.runtime.preprocess import align_face, decode_image, estimate_similarity, letterbox, read_image, to_input
from edgepipe.runtime.specs import Color, InputSpec, Layout


def test_letterbox_keeps_aspect_and_pads_right_bottom():
    image = np.full((100, 200, 3), 255, np.uint8)
    out, scale = letterbox(image, (64, 64), pad_value=0)
    assert out.shape == (64, 64, 3) and scale == pytest.approx(0.32)
    assert out[:32].min() == 255 and out[32:].max() == 0  # image on top, padding below


def test_to_input_normalises_and_orders_channels():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 10  # R
    image[..., 2] = 250  # B
    spec = InputSpec((3, 2, 3), layout=Layout.NCHW, color=Color.BGR, mean=(0, 0, 0), std=(10, 1, 1))
    x = to_input([image], spec)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    assert np.allclose(x[0, 0], 25.0) and np.allclose(x[0, 2], 10.0)  # BGR: B / 10 first, R last
    nhwc = to_input([image], InputSpec((3, 2, 3), layout=Layout.NHWC, mean=(10, 0, 0), std=(1, 1, 1)))
    assert nhwc.shape == (1, 2, 3, 3) and np.allclose(nhwc[..., 0], 0.0)
    with pytest.raises(InputError, match="expects"):
        to_input([np.zeros((5, 5, 3), np.uint8)], spec)


def test_estimate_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = estimate_similarity(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-9)


def test_align_face_moves_keypoints_onto_the_template():
    image = np.zeros((400, 400, 3), np.uint8)
    points = np.array([[150.0, 180.0], [250.0, 180.0], [200.0, 260.0]])
    for x, y in points.astype(int):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    template = np.array([[40.0, 50.0], [110.0, 50.0], [75.0, 106.0]])
    chip = align_face(image, points, template, 150)
    assert chip.shape == (150, 150, 3)
    for x, y in template.astype(int):
        assert chip[y - 1:y + 2, x - 1:x + 2].mean() > 100  # the bright dots landed on the template


def test_read_image_errors_name_the_path(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(InputError, match="notes.jpg: could not be decoded as a .jpg image"):
        read_image(tmp_path / "notes.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: could not be decoded as a .png image"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"notes.txt: not an image file \(expected one of .jpg"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="upload: could not be decoded as an image"):
        decode_image(b"\x00\x01")
