"""IoU tracking: stable ids, survival through missed detections, new ids after leaving, largest faces win."""
import pytest

from liveness_app.tracking import IoUTracker, iou, keep_largest
from liveness_app.types import FaceBox


def test_iou():
    a = FaceBox(0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, FaceBox(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(a, FaceBox(20, 20, 5, 5)) == 0.0
    assert iou(a, FaceBox(0, 0, 0, 0)) == 0.0


def test_moving_faces_keep_their_ids():
    tr = IoUTracker(iou_min=0.3, max_missed=2)
    ids = []
    for i in range(20):
        out = tr.update([FaceBox(10 + 4 * i, 50, 60, 60), FaceBox(400 - 3 * i, 60, 80, 80)])
        ids.append(tuple(t.track_id for t in out))
    assert set(ids) == {(1, 2)}


def test_track_survives_a_few_misses_and_a_returning_face_gets_a_new_id():
    tr = IoUTracker(iou_min=0.3, max_missed=2)
    box = FaceBox(100, 100, 50, 50)
    assert [t.track_id for t in tr.update([box])] == [1]
    assert tr.update([]) == [] and tr.update([]) == []  # two misses: still held
    assert [t.track_id for t in tr.update([box])] == [1]
    for _ in range(3):  # three misses > max_missed: the track ends
        tr.update([])
    assert tr.tracks == {}
    assert [t.track_id for t in tr.update([box])] == [2]


def test_each_detection_goes_to_its_best_track_once():
    tr = IoUTracker(iou_min=0.1, max_missed=0)
    tr.update([FaceBox(0, 0, 100, 100), FaceBox(90, 0, 100, 100)])
    out = tr.update([FaceBox(85, 0, 100, 100), FaceBox(5, 0, 100, 100)])  # listed in the other order
    assert [t.track_id for t in out] == [2, 1]


def test_reset_never_reuses_ids():
    tr = IoUTracker()
    tr.update([FaceBox(0, 0, 10, 10)])
    tr.reset()
    assert [t.track_id for t in tr.update([FaceBox(0, 0, 10, 10)])] == [2]


def test_keep_largest():
    boxes = [FaceBox(0, 0, 10, 10), FaceBox(50, 0, 40, 40), FaceBox(100, 0, 20, 20), FaceBox(200, 0, 30, 30)]
    kept, dropped = keep_largest(boxes, 2)
    assert kept == [boxes[1], boxes[3]] and dropped == 2
    assert keep_largest(boxes, 10) == (boxes, 0)


def test_a_new_face_becomes_a_track_only_after_n_of_the_last_m_frames():
    tr = IoUTracker(iou_min=0.3, max_missed=5, confirm_hits=3, confirm_window=5)
    box = FaceBox(100, 100, 50, 50)
    seen = [True, False, True, False, False, True, True]  # hits at 0, 2, 5, 6: 3 of the last 5 only at frame 6
    out = [tr.update([box] if s else []) for s in seen]
    assert [[t.track_id for t in o] for o in out] == [[], [], [], [], [], [], [1]]
    assert [t.track_id for t in tr.update([box])] == [1]  # confirmed stays confirmed
    assert tr.tentative == []


def test_a_one_frame_detection_never_becomes_a_track_and_ids_have_no_gaps():
    tr = IoUTracker(iou_min=0.3, max_missed=2, confirm_hits=2, confirm_window=3)
    ghost, face = FaceBox(400, 400, 30, 30), FaceBox(100, 100, 50, 50)
    assert tr.update([ghost]) == []  # one-frame false detection
    for _ in range(4):
        tr.update([])
    assert tr.tentative == [] and tr.tracks == {}  # forgotten after max_missed
    assert tr.update([face]) == []
    assert [t.track_id for t in tr.update([face])] == [1]  # the ghost used no id


def test_confirmation_settings_are_validated():
    with pytest.raises(ValueError, match="confirm_hits"):
        IoUTracker(confirm_hits=4, confirm_window=3)
    with pytest.raises(ValueError, match="confirm_hits"):
        IoUTracker().set_confirmation(0, 3)
