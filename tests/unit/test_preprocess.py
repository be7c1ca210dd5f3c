import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgepipe.errors import InputError, SpecError
from edgepipe.runtime.preprocess import (
    align_face,
    decode_image,
    estimate_similarity,
    letterbox,
    read_image,
    resize_to_input,
    to_input,
)
from edgepipe.runtime.specs import Color, InputSpec, Layout, Resize


def test_letterbox_keeps_aspect_and_pads_right_bottom():
    image = np.full((100, 200, 3), 255, np.uint8)
    out, mapping = letterbox(image, (64, 64), pad_value=0)
    assert out.shape == (64, 64, 3) and mapping.scale_xy == pytest.approx((0.32, 0.32))
    assert mapping.offset_xy == (0.0, 0.0)
    assert out[:32].min() == 255 and out[32:].max() == 0  # image on top, padding below


def test_centred_letterbox_pads_both_sides_and_maps_back():
    """The YOLO family's letterbox: the mapping carries the offset, so results land back on the source."""
    image = np.full((100, 200, 3), 255, np.uint8)
    spec = InputSpec((3, 64, 64), resize=Resize.LETTERBOX_CENTER, pad_value=0)
    out, mapping = resize_to_input(image, spec)
    assert mapping.scale_xy == pytest.approx((0.32, 0.32)) and mapping.offset_xy == (0.0, 16.0)
    assert out[:16].max() == 0 and out[16:48].min() == 255 and out[48:].max() == 0
    corners_input = np.array([[0.0, 16.0], [64.0, 48.0]], np.float32)  # where the source's corners landed
    assert np.allclose(mapping.to_source(corners_input), [[0, 0], [200, 100]], atol=1e-4)
    boxes = mapping.boxes_to_source(np.array([[-5.0, 10.0, 70.0, 40.0]]), (100, 200))
    assert np.allclose(boxes, [[0, 0, 200, 75]], atol=1e-4)  # clipped to the image


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


@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.sampled_from(list(Layout)),
       st.sampled_from(list(Color)), st.lists(st.floats(-300, 300, width=32), min_size=6, max_size=6),
       st.integers(0, 2**32 - 1))
def test_to_input_equals_the_whole_array_formula_bit_for_bit(n, height, width, layout, color, numbers, seed):
    """The per-plane fast path gives exactly stack -> float32 -> colour order -> (x - mean) / std -> layout."""
    mean, std = numbers[:3], [abs(v) + 0.01 if i else 1.0 for i, v in enumerate(numbers[3:])]  # std 1 is a fast path
    spec = InputSpec((3, height, width), layout=layout, color=color, mean=tuple(mean), std=tuple(std))
    images = list(np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8))
    reference = np.stack(images).astype(np.float32)
    reference = reference[..., ::-1] if color == Color.BGR else reference
    reference = (reference - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    reference = reference.transpose(0, 3, 1, 2) if layout == Layout.NCHW else reference
    batch = to_input(images, spec)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert np.array_equal(batch, reference)


def test_to_input_refuses_images_of_different_sizes():
    spec = InputSpec((3, 4, 4))
    with pytest.raises(InputError, match="one size"):
        to_input([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], spec)
    with pytest.raises(InputError, match="HxWx3"):
        to_input([], spec)


def test_a_uint8_input_gets_raw_pixels_and_needs_no_normalisation():
    image = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    x = to_input([image], InputSpec((3, 2, 3), layout=Layout.NHWC, mean=(0, 0, 0), std=(1, 1, 1), dtype="uint8"))
    assert x.dtype == np.uint8 and np.array_equal(x[0], image)
    with pytest.raises(SpecError, match="uint8 input takes raw pixels"):
        InputSpec((3, 2, 3), dtype="uint8")  # the default mean/std would be silently ignored
    with pytest.raises(SpecError, match="dtype must be one of"):
        InputSpec((3, 2, 3), dtype="float16")


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


PAD_SPEC = InputSpec((3, 128, 96), color=Color.BGR, mean=(0, 0, 0), std=(1, 1, 1), resize=Resize.PAD,
                     size_multiple=32)


@given(height=st.integers(1, 300), width=st.integers(1, 300))
def test_pad_keeps_the_image_size_up_to_the_input_and_pads_to_multiples(height, width):
    image = np.full((height, width, 3), 200, np.uint8)
    out, mapping = resize_to_input(image, PAD_SPEC)
    scale = min(1.0, 128 / height, 96 / width)
    assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0 and out.shape[0] <= 128 and out.shape[1] <= 96
    assert mapping.input_hw == out.shape[:2] and mapping.offset_xy == (0.0, 0.0)
    fitted_h, fitted_w = max(1, round(height * scale)), max(1, round(width * scale))
    assert out[:fitted_h, :fitted_w].min() == 200 and out[fitted_h:].sum() == 0 and out[:, fitted_w:].sum() == 0
    corner = mapping.to_source(np.array([[fitted_w, fitted_h]], np.float32))[0]
    assert corner == pytest.approx([width, height], rel=1e-5)  # the image's far corner maps back to itself
    assert to_input([out], PAD_SPEC).shape == (1, 3, *out.shape[:2])


def test_pad_refuses_sizes_the_graph_cannot_take():
    with pytest.raises(InputError, match=r"multiples of 32 up to \(128, 96\)"):
        to_input([np.zeros((40, 64, 3), np.uint8)], PAD_SPEC)
    with pytest.raises(InputError, match="multiples of 32"):
        to_input([np.zeros((160, 64, 3), np.uint8)], PAD_SPEC)
    with pytest.raises(SpecError, match="size_multiple must be >= 1 and divide the input size"):
        InputSpec((3, 100, 96), resize=Resize.PAD, size_multiple=32)
