"""Face alignment: template, similarity fit, landmark layouts, warping, and dlib detection on real photos."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sevnet_hf.data import align
from sevnet_hf.data.align import (
    CANONICAL_TEMPLATE_5PT,
    FaceFinder,
    align_face,
    canonical_template,
    similarity_transform,
    to_five_points,
    to_rgb_uint8,
    transform_points,
)

cv2 = pytest.importorskip("cv2")


def _rotation(degrees: float, scale: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _fake_68(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random 68 points whose eye contours, nose tip and mouth corners have known five-point values."""
    points = rng.uniform(0, 400, size=(68, 2))
    five = np.array([[120.0, 150.0], [200.0, 148.0], [161.0, 200.0], [130.0, 240.0], [190.0, 241.0]])
    ring = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1) * [12, 5]
    points[36:42] = five[0] + ring
    points[42:48] = five[1] + ring
    points[30], points[48], points[54] = five[2], five[3], five[4]
    return points, five


def test_template_is_a_centred_face_with_margins():
    template = CANONICAL_TEMPLATE_5PT
    assert template.shape == (5, 2) and template.dtype == np.float32
    left_eye, right_eye, nose, left_mouth, right_mouth = template
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert left_eye[1] == right_eye[1] < nose[1] < left_mouth[1] == right_mouth[1]
    assert np.allclose(template[:, 0] + template[[1, 0, 2, 4, 3], 0], 256)  # mirror-symmetric about x = 128
    iod = right_eye[0] - left_eye[0]
    # Brows (~0.4 IOD above the eyes) and chin (~1.9 IOD below) stay inside even the 224 centre crop (16..240).
    assert left_eye[1] - 0.4 * iod > 16 and left_eye[1] + 1.9 * iod < 240
    assert np.allclose(canonical_template(128), template / 2)
    with pytest.raises(ValueError):
        template[0, 0] = 1.0


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(7, 2))
    true = np.hstack([_rotation(23.0, 1.7), [[5.0], [-12.0]]])
    matrix = similarity_transform(src, transform_points(src, true))
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    assert np.allclose(matrix, true, atol=1e-9)
    # A mirrored target cannot be matched by a similarity; the fit must stay a rotation (det > 0), not reflect.
    mirrored = src * [-1.0, 1.0]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="identical"):
        similarity_transform(np.ones((5, 2)), src[:5])


def test_to_five_points_for_68_66_49_and_5():
    points68, five = _fake_68(np.random.default_rng(1))
    assert np.allclose(to_five_points(points68), five)
    points66 = np.delete(points68, [60, 64], axis=0)  # DISFA: no inner mouth corners
    assert np.allclose(to_five_points(points66), five)
    points49 = np.delete(points68, list(range(17)) + [60, 64], axis=0)  # BP4D: no jaw, no inner mouth corners
    assert np.allclose(to_five_points(points49), five)
    assert np.allclose(to_five_points(five.ravel()), five)  # flattened input is accepted
    for bad in (np.zeros((4, 2)), np.zeros((68, 3)), np.zeros((51, 2))):
        with pytest.raises(ValueError, match=r"shape .*accepted.*49"):
            to_five_points(bad)
    points68[40] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        to_five_points(points68)


def test_dlib5_order_is_converted_not_taken_as_template_order():
    # dlib's 5-point order: right-eye corners, left-eye corners, nose base. Taken at face value these would put the
    # "left eye" on the image right; converted, the eyes must come out left then right, nose and mouth below.
    dlib5 = np.array([[255.0, 104.0], [238.0, 105.0], [195.0, 101.0], [212.0, 103.0], [224.0, 135.0]])
    five = to_five_points(dlib5, layout="dlib5")
    assert five[0, 0] < five[2, 0] < five[1, 0]
    assert np.allclose(five[0], dlib5[2:4].mean(axis=0)) and np.allclose(five[1], dlib5[0:2].mean(axis=0))
    assert five[2, 1] < dlib5[4, 1] < five[3, 1]  # nose tip above the nose base, mouth below
    with pytest.raises(ValueError, match="5 points"):
        to_five_points(np.zeros((68, 2)), layout="dlib5")


def test_image_conversions():
    gray16 = np.full((10, 12), 65535, dtype=np.uint16)
    rgb = to_rgb_uint8(gray16)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8 and rgb.max() == 255
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [200, 0, 0]
    assert to_rgb_uint8(np.full((4, 4), 0.5))[0, 0, 0] == 128
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 2)))


@pytest.mark.parametrize("scale", [0.8, 3.5])
@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16"])
def test_align_face_puts_landmarks_on_the_template(scale, kind):
    """Draw blobs at rotated, scaled template points; after alignment their centroids sit on the template."""
    template = CANONICAL_TEMPLATE_5PT.astype(np.float64)
    src = (template - 128) @ _rotation(15.0, scale).T + [400, 380]
    canvas = np.zeros((900, 800), dtype=np.uint8)
    for x, y in src:
        cv2.circle(
            canvas, (round(x * 16), round(y * 16)), round(5 * scale * 16), 255, -1, lineType=cv2.LINE_AA, shift=4
        )
    image = {
        "gray": canvas,
        "rgba": np.dstack([canvas, canvas, canvas, np.full_like(canvas, 255)]),
        "uint16": canvas.astype(np.uint16) * 257,
    }[kind]
    aligned, matrix = align_face(image, src)
    assert aligned.shape == (256, 256, 3) and aligned.dtype == np.uint8
    assert np.allclose(transform_points(src, matrix), template, atol=1e-6)
    channel = aligned[:, :, 1].astype(np.float64)
    for tx, ty in template:
        x0, y0 = int(tx) - 10, int(ty) - 10
        window = channel[y0 : y0 + 21, x0 : x0 + 21]
        ys, xs = np.mgrid[y0 : y0 + 21, x0 : x0 + 21]
        centroid = np.array([(window * xs).sum(), (window * ys).sum()]) / window.sum()
        assert np.abs(centroid - [tx, ty]).max() < 0.35
    assert align_face(image, src, size=128)[0].shape == (128, 128, 3)


def test_align_image_file_decodes_large_jpeg_faces_reduced(tmp_path):
    template = CANONICAL_TEMPLATE_5PT.astype(np.float64)
    src = (template - 128) @ _rotation(-8.0, 3.5).T + [520, 640]
    image = np.zeros((1392, 1040, 3), dtype=np.uint8)
    cv2.ellipse(image, (520, 700), (300, 420), 0, 0, 360, (150, 120, 100), -1)
    for x, y in src:
        cv2.circle(image, (round(x), round(y)), 16, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    jpeg, png = tmp_path / "face.jpg", tmp_path / "face.png"
    cv2.imwrite(str(jpeg), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(png), image)
    assert align.jpeg_reduction(jpeg, src, 256) == 2 and align.jpeg_reduction(png, src, 256) == 1
    assert align.read_image(jpeg, reduce=2).shape == (696, 520, 3)
    with pytest.raises(ValueError, match="needs a JPEG"):
        align.read_image(png, reduce=2)
    fast, matrix = align.align_image_file(jpeg, src)
    full, full_matrix = align_face(align.read_image(jpeg), src)
    assert np.allclose(matrix, full_matrix)
    difference = np.abs(fast.astype(np.int16) - full.astype(np.int16))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) < 20  # resampling differs only at sharp edges
    for tx, ty in template:  # and nothing moved: the dots' centroids agree to a small fraction of a pixel
        x0, y0 = int(tx) - 10, int(ty) - 10
        ys, xs = np.mgrid[y0 : y0 + 21, x0 : x0 + 21]
        centroids = []
        for aligned in (fast, full):
            window = np.clip(aligned[y0 : y0 + 21, x0 : x0 + 21, 0].astype(np.float64) - 160, 0, None)
            centroids.append(np.array([(window * xs).sum(), (window * ys).sum()]) / window.sum())
        assert np.abs(centroids[0] - centroids[1]).max() < 0.1 and np.abs(centroids[1] - [tx, ty]).max() < 0.3
    assert np.array_equal(align.align_image_file(png, src)[0], align_face(image[:, :, ::-1], src)[0])


def test_align_face_border_modes():
    image = np.full((60, 60, 3), 200, dtype=np.uint8)
    landmarks = CANONICAL_TEMPLATE_5PT - 128 + 30  # output centre = image centre; the output corners lie outside
    constant, _ = align_face(image, landmarks, border="constant")
    replicate, _ = align_face(image, landmarks, border="replicate")
    assert constant[0, 0].tolist() == [0, 0, 0] and replicate[0, 0].tolist() == [200, 200, 200]
    assert constant[128, 128].tolist() == replicate[128, 128].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="border"):
        align_face(image, landmarks, border="wrap")


# ---------------------------------------------------------------------------------------------------------------
# dlib on real photos.


def _photos() -> dict[str, np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as grace:
        return {"astronaut": skimage_data.astronaut(), "grace_hopper": np.asarray(grace.convert("RGB"))}


@pytest.fixture(scope="module")
def finders():
    pytest.importorskip("dlib")
    return FaceFinder(), FaceFinder(landmark_model="68")


def test_face_finder_on_real_photos(finders):
    finder5, finder68 = finders
    for name, photo in _photos().items():
        faces = finder5.find(photo)
        assert len(faces) == 1, name
        face = faces[0]
        assert face.score > 0.5 and face.landmarks5.shape == (5, 2) and face.landmarks5.dtype == np.float32
        x0, y0, x1, y1 = face.box
        assert x0 < face.landmarks5[:, 0].min() and face.landmarks5[:, 0].max() < x1
        aligned, matrix = align_face(photo, face.landmarks5)
        assert aligned.shape == (256, 256, 3)
        # Independent check of the dlib-5 conversion: the eye centres and nose tip measured by the 68-point model
        # land near the template after the 5-point alignment. The mouth corners are estimated by the 5-point
        # conversion, and the astronaut's broad smile widens her mouth by ~0.2 IOD (~14 px), so they are looser.
        (face68,) = finder68.find(photo)
        measured = transform_points(face68.landmarks5, matrix)
        errors = np.linalg.norm(measured - CANONICAL_TEMPLATE_5PT, axis=1)
        assert errors[:3].max() < 8.0, (name, errors)  # ~0.12 IOD
        assert errors[3:].max() < 20.0, (name, errors)
        assert finder5.largest(photo).box == face.box
        if name == "grace_hopper":  # a shrunken copy (face 215 -> 107 px) finds the same face; fit at full size
            (shrunk,) = FaceFinder(max_side=300).find(photo)
            assert np.abs(shrunk.landmarks5 - face.landmarks5).max() < 0.1 * (x1 - x0)


def test_face_finder_finds_nothing_in_a_blank_image(finders):
    assert finders[0].find(np.full((200, 200), 128, dtype=np.uint8)) == []
    assert finders[0].largest(np.zeros((200, 200, 3), dtype=np.uint8)) is None


def test_face_finder_errors_name_what_is_missing(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="detector"):
        FaceFinder(detector="mtcnn")
    monkeypatch.setattr(align, "dlib_models_dir", lambda: str(tmp_path))
    pytest.importorskip("dlib")
    with pytest.raises(FileNotFoundError, match="shape_predictor_5_face_landmarks.dat"):
        FaceFinder().find(np.zeros((50, 50, 3), dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    with pytest.raises(ImportError, match="dlib-bin"):
        FaceFinder().find(np.zeros((50, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pillow(orientation):
    from PIL import Image

    from sevnet_hf.data.align import apply_orientation

    methods = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    stored = (np.random.default_rng(orientation).random((5, 7, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(stored)
    expected = np.asarray(image.transpose(methods[orientation]) if orientation in methods else image)
    assert np.array_equal(apply_orientation(stored, orientation), expected)
