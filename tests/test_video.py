"""AU detection on videos: one row per processed frame, timestamps, ``--every``, tracking against full detection,
lost and re-found faces, several faces, bounded streaming, annotated videos and unreadable video files."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
pytest.importorskip("pandas")

from sevnet_hf.data.align import FaceFinder, read_image  # noqa: E402
from sevnet_hf.inference import AUDetector, read_results  # noqa: E402
from sevnet_hf.inference import detect as detect_module  # noqa: E402
from sevnet_hf.inference.overlay import BOX_COLOUR  # noqa: E402
from sevnet_hf.inference.video import iter_video_frames, video_info  # noqa: E402

FPS = 20.0
SIZE = (320, 240)
FRAMES = 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _astronaut_face() -> np.ndarray:
    from skimage import data

    return data.astronaut()[50:220, 140:310]  # 170 x 170, the face itself ~87 px


def _grace_face() -> np.ndarray:
    from matplotlib import cbook

    grace = read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return cv2.resize(grace[100:400, 110:410], (170, 170), interpolation=cv2.INTER_AREA)


def write_video(path, faces, frames=FRAMES, size=SIZE, gap=None) -> str:
    """MJPG AVI: each face patch glides across a gradient background; frames in ``gap`` show no face."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, size)
    assert writer.isOpened()
    for index in range(frames):
        frame = np.full((height, width, 3), 90, np.uint8)
        frame[:, :, 1] = np.linspace(60, 160, width, dtype=np.uint8)[None, :]
        if gap is None or not gap[0] <= index < gap[1]:
            for k, face in enumerate(faces):
                x = int(10 + k * 330 + index * 3)
                y = int(25 + 15 * np.sin(index / 6 + k))
                frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "moving": write_video(folder / "moving.avi", [_astronaut_face()]),
        "gap": write_video(folder / "gap.avi", [_astronaut_face()], frames=30, gap=(12, 18)),
        "two": write_video(folder / "two.avi", [_astronaut_face(), _grace_face()], frames=16, size=(680, 240)),
    }


@pytest.fixture(scope="module")
def detector(model_dir):
    return AUDetector(str(model_dir), device="cpu", batch_size=4)


def test_one_row_per_frame_with_timestamps_and_every(videos, model_dir, tmp_path, capsys):
    output = tmp_path / "all.csv"
    assert detect_module.main([videos["moving"], "--model", str(model_dir), "--output", str(output)]) == 0
    assert "frame" in capsys.readouterr().err  # the progress bar counts frames (and shows their rate)
    table = read_results(output)
    assert table["frame"].tolist() == list(range(FRAMES)) and set(table["status"]) == {"ok"}
    np.testing.assert_allclose(table["timestamp"], table["frame"] / FPS, atol=1e-6)
    assert set(table["track"]) == {0} and table[["AU1_prob", "AU12_prob"]].notna().all().all()

    halved = tmp_path / "every2.csv"
    annotated = tmp_path / "annotated"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    args = [videos["moving"], str(corrupt), str(empty), "--model", str(model_dir), "--output", str(halved)]
    code = detect_module.main([*args, "--every", "2", "--annotate_video", str(annotated), "--progress", "false"])
    assert code == 0
    table = read_results(halved)
    faces = table[table["status"] == "ok"]
    assert faces["frame"].tolist() == list(range(0, FRAMES, 2))
    np.testing.assert_allclose(faces["timestamp"], faces["frame"] / FPS, atol=1e-6)
    errors = table[table["status"] == "error"]
    assert sorted(errors["source"]) == sorted([str(corrupt), str(empty)])
    assert "empty file" in errors[errors["source"] == str(empty)]["message"].iloc[0]
    (video_file,) = [p for p in annotated.iterdir() if p.suffix == ".avi"]
    info = video_info(video_file)
    assert info.frame_count == FRAMES // 2 and abs(info.fps - FPS / 2) < 1e-3
    drawn = next(iter_video_frames(video_file))[2]
    original = next(iter_video_frames(videos["moving"]))[2]
    green = np.all(np.abs(drawn.astype(int) - BOX_COLOUR) < 60, axis=-1) & ~np.all(
        np.abs(original.astype(int) - BOX_COLOUR) < 60, axis=-1
    )
    assert green.sum() > 100  # the face box is drawn


def test_tracking_follows_the_face_as_closely_as_full_detection(videos, detector):
    results = detector.detect(videos["moving"])
    assert len(results) == FRAMES and all(r.status == "ok" for r in results)
    counts = detector.tracker_counts
    assert counts["full_detections"] == 1 and counts["tracked"] >= FRAMES * 0.8 and counts["lost"] == 0
    assert {r.detection for r in results} == {"detected", "tracked", "verified"}
    finder = FaceFinder()
    errors = []
    for (index, _, frame), result in zip(iter_video_frames(videos["moving"]), results):
        (reference,) = finder.find(frame)
        interocular = np.linalg.norm(reference.landmarks5[1] - reference.landmarks5[0])
        errors.append(np.abs(result.landmarks - reference.landmarks5).max() / interocular)
        assert result.frame == index
    assert max(errors) < 0.1 and np.mean(errors) < 0.04, errors


def test_a_lost_face_gives_no_face_rows_and_is_found_again(videos, detector):
    results = detector.detect(videos["gap"])
    missing = [r.frame for r in results if r.status == "no_face"]
    assert len(results) == 30 and missing == list(range(12, 18))
    before, after = results[11], results[18]
    assert after.detection == "detected" and after.track != before.track  # a new track after the gap
    assert detector.tracker_counts["lost"] == 1


def test_two_faces_keep_their_track_ids(videos, detector):
    results = detector.detect(videos["two"])
    assert len(results) == 2 * 16 and all(r.status == "ok" for r in results)
    pairs = []
    for frame in range(16):
        left, right = sorted((r for r in results if r.frame == frame), key=lambda r: r.box[0])
        assert left.box[2] < right.box[0]
        pairs.append((left.track, right.track))
    assert len(set(pairs)) == 1 and len(set(pairs[0])) == 2  # each face keeps its own id in every frame
    for track in pairs[0]:
        xs = [r.box[0] for r in results if r.track == track]
        assert np.all(np.diff(xs) > 0)  # and moves right, as drawn


def test_streaming_keeps_a_bounded_number_of_frames_in_flight(videos, model_dir):
    detector = AUDetector(str(model_dir), device="cpu", batch_size=2)
    batches = detector.iter_results(videos["moving"])
    first = next(batches)
    assert len(first) == 2 and detector.stats.frames <= 2 + 2 * 2 + 2  # batch + prefetch queue + one in hand
    batches.close()
    frames = list(iter_video_frames(videos["moving"], every=3, max_frames=5))
    assert [index for index, _, _ in frames] == [0, 3, 6, 9, 12]
    np.testing.assert_allclose([t for _, t, _ in frames], np.array([0, 3, 6, 9, 12]) / FPS)
    assert frames[0][2].shape == (SIZE[1], SIZE[0], 3) and frames[0][2].dtype == np.uint8


def test_a_video_whose_name_is_not_utf8_is_decoded_not_a_crash(videos, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    odd = os.path.join(os.fsencode(tmp_path), b"clip \xff.avi")
    try:
        shutil.copyfile(videos["moving"], odd)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    script = (
        "import sys\n"
        "from sevnet_hf.inference.video import iter_video_frames, video_info\n"
        "print(sum(1 for _ in iter_video_frames(sys.argv[1])), video_info(sys.argv[1]).frame_count)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, odd], capture_output=True, text=True)
    assert done.returncode == 0, done.returncode  # OpenCV given such a name as str died with SIGSEGV (-11)
    assert done.stdout.split() == [str(FRAMES), str(FRAMES)]
