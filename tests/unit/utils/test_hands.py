"""The hand stage: MediaPipe's anchors, decoding and weighted NMS, the rotated crop, landmark
features, and the real palm + landmark models on a hand pasted into a scene."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from utils.hands import (
    HAND_FEATURES,
    Hand,
    HandDetector,
    Palm,
    RotatedRect,
    crop,
    decode_palms,
    hand_inputs,
    hand_square,
    is_scene,
    landmark_features,
    landmarks_to_rect,
    mirrored_features,
    palm_to_rect,
    ssd_anchors,
    weighted_nms,
)
from utils.settings import get_settings


def test_anchors_follow_mediapipe_palm_options() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (2016, 2)  # num_boxes in palm_detection_cpu.pbtxt
    # stride 8: a 24x24 map, 2 anchors per cell (aspect 1.0 + interpolated scale)
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(anchors[2], [1.5 / 24, 0.5 / 24])
    # the three stride-16 layers share one 12x12 map: 6 anchors per cell
    assert np.all(anchors[1152:1158] == anchors[1152]) and not np.all(anchors[1158] == anchors[1152])
    np.testing.assert_allclose(anchors[-1], [11.5 / 12, 11.5 / 12])


def test_decode_uses_anchor_offsets_sigmoid_and_threshold() -> None:
    anchors = ssd_anchors()
    raw = np.zeros((2016, 18), np.float32)
    scores = np.full((2016, 1), -10.0, np.float32)
    i = 1152 + 6 * (12 * 5 + 7)  # a stride-16 cell, column 7 row 5: centre (7.5/12, 5.5/12)
    raw[i, :4] = [19.2, -9.6, 48.0, 96.0]  # dx, dy, w, h in 192-pixel units
    raw[i, 4:6] = [0.0, 19.2]  # keypoint 0 one tenth below the anchor
    scores[i] = 3.0
    scores[i + 1] = 0.1  # sigmoid(0.1) ~ 0.52 passes; no overlap test here: same centre, zero size
    palms = decode_palms(raw, scores, anchors)
    top = palms[0]
    assert top.score == pytest.approx(1 / (1 + math.exp(-3.0)))
    cx, cy = 7.5 / 12 + 0.1, 5.5 / 12 - 0.05
    np.testing.assert_allclose(top.box, [cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25], atol=1e-6)
    np.testing.assert_allclose(top.keypoints[0], [7.5 / 12, 5.5 / 12 + 0.1], atol=1e-6)
    scores[:] = -10.0
    assert decode_palms(raw, scores, anchors) == []


def test_weighted_nms_averages_a_cluster_by_score_and_keeps_separate_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 7, 2), np.float32)
    kps[1] += 2.0
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    out = weighted_nms(boxes, kps, scores)
    assert [round(p.score, 2) for p in out] == [0.9, 0.7]
    np.testing.assert_allclose(out[0].box, (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5, atol=1e-5)
    np.testing.assert_allclose(out[0].keypoints, np.full((7, 2), 2.0 * 0.6 / 1.5), atol=1e-5)
    np.testing.assert_allclose(out[1].box, boxes[2])


def test_palm_rect_turns_the_fingers_up_shifts_and_scales() -> None:
    kps = np.zeros((7, 2), np.float32)
    kps[0], kps[2] = [100, 100], [140, 100]  # wrist -> middle MCP points right
    rect = palm_to_rect(Palm(np.array([80, 80, 120, 120], np.float32), kps, 0.9))
    assert rect.rotation == pytest.approx(math.pi / 2)
    assert rect.width == rect.height == pytest.approx(2.6 * 40)
    assert (rect.cx, rect.cy) == pytest.approx((120.0, 100.0))  # half a palm towards the fingers


def test_landmark_roi_turns_to_the_knuckles_and_fits_the_hand() -> None:
    """hand_landmarks_to_rect: wrist -> knuckles' centre points up, 2x the rotated box, shifted
    a tenth of it towards the fingers."""
    pts = np.zeros((21, 3), np.float32)
    pts[:, :2] = [100, 100]  # everything on the wrist, then a hand pointing right (+x)
    for i in (1, 2, 3):  # thumb, below the palm (+y)
        pts[i, :2] = [100 + 10 * i, 100 + 12 * i]
    for finger, y in zip((5, 9, 13, 17), (85, 100, 115, 130), strict=True):
        pts[finger, :2] = [140, y]  # knuckles
        pts[finger + 1, :2] = [160, y]  # next joints
        pts[finger + 2, :2] = pts[finger + 3, :2] = [300, y]  # fingertips: not in the ROI set
    rect = landmarks_to_rect(pts)
    assert rect.rotation == pytest.approx(math.pi / 2)
    # rotated frame: "up" is +x (extent 100..160), "right" is +y (85..136)
    assert rect.width == rect.height == pytest.approx(2.0 * 60)
    assert (rect.cx, rect.cy) == pytest.approx((130 + 0.1 * 60, (85 + 136) / 2))
    # a quarter turn of the hand turns the ROI with it
    turned = pts.copy()
    turned[:, 0], turned[:, 1] = -pts[:, 1], pts[:, 0]
    assert abs(landmarks_to_rect(turned).rotation) == pytest.approx(math.pi)  # fingers down


def test_rotated_crop_maps_corners_and_turns_the_image() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 150:] = 255  # the right quarter is white
    upright = RotatedRect(100, 50, 200, 100, 0.0)
    np.testing.assert_allclose(upright.corners(), [[0, 0], [200, 0], [200, 100], [0, 100]], atol=1e-4)
    # "up" pointing right: the white right side becomes the top of the crop
    turned = crop(img, RotatedRect(100, 50, 100, 200, math.pi / 2), 64)
    assert turned[:10].mean() > 200 and turned[-20:].mean() < 20


def _fake_hand(rng: np.random.Generator) -> np.ndarray:
    pts = rng.uniform(-1, 1, (21, 3))
    pts[9, :2] = [0.0, -1.0]
    return pts.astype(np.float32)


def test_landmark_features_ignore_position_scale_and_roll() -> None:
    rng = np.random.default_rng(0)
    base = _fake_hand(rng)
    ref = landmark_features(Hand(True, "palm", 0.9, RotatedRect(0, 0, 1, 1, 0), base))
    angle, scale, shift = 1.1, 37.0, np.array([300.0, 120.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = base.copy()
    moved[:, :2] = base[:, :2] @ rot.T * scale + shift
    moved[:, 2] = base[:, 2] * scale
    out = landmark_features(Hand(True, "palm", 0.9, RotatedRect(0, 0, 1, 1, 0), moved))
    assert out.shape == (HAND_FEATURES,)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert out[0] == 1.0 and np.all(out[-15:] >= 0) and np.all(out[-15:] <= 1)
    nothing = landmark_features(Hand(False, "none", 0.1, RotatedRect(0, 0, 1, 1, 0), None))
    assert not nothing.any()


def test_mirrored_features_are_the_features_of_the_mirrored_hand() -> None:
    """The mirror view's landmark half is computed from the view's features alone: it must be
    what `landmark_features` gives for the same hand with the frame flipped left-right."""
    rng = np.random.default_rng(3)
    rect = RotatedRect(0, 0, 1, 1, 0)
    for _ in range(5):
        pts = _fake_hand(rng)
        pts[:, :2] += rng.uniform(50, 400, 2)
        flipped = pts.copy()
        flipped[:, 0] = 640 - pts[:, 0]
        view = landmark_features(Hand(True, "palm", 0.8, rect, pts))
        mirror = landmark_features(Hand(True, "palm", 0.8, rect, flipped))
        np.testing.assert_allclose(mirrored_features(view), mirror, atol=1e-4)
        assert not np.allclose(view, mirror, atol=1e-3), "a hand is not its own mirror image"
    assert not mirrored_features(np.zeros(HAND_FEATURES, np.float32)).any()


def test_the_classifier_sees_a_small_hand_cropped_and_a_big_one_whole() -> None:
    pts = np.zeros((21, 3), np.float32)
    pts[:, 0] = np.linspace(300, 400, 21)
    pts[:, 1] = np.linspace(200, 260, 21)
    small = hand_square(Hand(True, "palm", 0.9, RotatedRect(0, 0, 1, 1, 0), pts), 640, 480)
    assert small is not None and small.rotation == 0.0
    assert (small.cx, small.cy, small.width) == pytest.approx((350, 230, 130))  # 100 px + 15 % a side
    big = hand_square(Hand(True, "palm", 0.9, RotatedRect(0, 0, 1, 1, 0), pts * 2.5), 640, 480)
    assert big is None
    assert hand_square(Hand(False, "none", 0.1, RotatedRect(0, 0, 1, 1, 0), None), 640, 480) is None


@pytest.fixture(scope="module")
def detector() -> HandDetector:
    return HandDetector.from_dir(get_settings().hand_models_dir, 1)


def test_palm_detector_finds_a_small_hand_in_a_scene(detector, sample_images) -> None:
    from src.composites import background

    hand = cv2.imread(str(sample_images["paper"][5]))  # a roboflow crop the palm detector finds
    scene = background(np.random.default_rng(1))
    x, y, side = 400, 180, 150
    scene[y : y + side, x : x + side] = cv2.resize(hand, (side, side))
    found = hand_inputs(scene, detector, 224, "mobilenet")
    assert found.hand.found and found.hand.source == "palm", found.hand
    centre = found.hand.rect.corners().mean(0)
    assert x < centre[0] < x + side and y - side / 2 < centre[1] < y + side
    lm = found.hand.landmarks[:, :2]
    assert np.mean((lm[:, 0] > x - 10) & (lm[:, 0] < x + side + 10) & (lm[:, 1] > y - 10)) > 0.9
    assert found.image.shape == (224, 224, 3) and found.features[0] == 1.0
    body = found.hand.as_json()
    assert len(body["box"]) == 4 and len(body["landmarks"]) == 21


def test_a_hand_in_a_scene_gets_a_second_landmark_pass_on_its_own_roi(detector, sample_images, monkeypatch) -> None:
    """MediaPipe's tracking step, once: the landmarks of the palm's crop give a tighter ROI, and
    the landmarks the classifier gets come from that. A crop the first pass is sure of skips it
    (one invoke less on most uploads)."""
    from src.composites import background
    from utils import hands

    hand = cv2.imread(str(sample_images["paper"][5]))
    scene = background(np.random.default_rng(1))
    x, y, side = 400, 180, 150
    scene[y : y + side, x : x + side] = cv2.resize(hand, (side, side))
    assert is_scene(640, 480) and not is_scene(*hand.shape[1::-1])
    rois: list = []
    real = hands.landmarks_to_rect
    monkeypatch.setattr(hands, "landmarks_to_rect", lambda lms: rois.append(real(lms)) or rois[-1])
    found = hand_inputs(scene, detector, 224, "mobilenet").hand
    assert found.found and found.source == "palm" and len(rois) == 1
    assert found.rect == rois[0], "the hand's box is the refined ROI"
    # the refined landmarks are consistent with their own ROI (a fixed point, within 15 %)
    again = real(found.landmarks)
    assert abs(again.width - found.rect.width) < 0.15 * found.rect.width
    assert math.hypot(again.cx - found.rect.cx, again.cy - found.rect.cy) < 0.15 * found.rect.width
    rois.clear()
    in_crop = hand_inputs(hand, detector, 224, "mobilenet").hand
    assert in_crop.found and in_crop.presence >= hands.SURE_PRESENCE and rois == [], "a sure crop: one pass"
    monkeypatch.setattr(hands, "SURE_PRESENCE", 1.01)  # every first pass unsure
    assert hand_inputs(hand, detector, 224, "mobilenet").hand.found and len(rois) == 1
    # a refined crop without a hand keeps the first pass
    monkeypatch.setattr(hands, "landmarks_to_rect", lambda lms: RotatedRect(60, 60, 100, 100, 0.0))
    first = hand_inputs(scene, detector, 224, "mobilenet").hand
    assert first.found and first.rect != found.rect and (x < first.rect.cx < x + side)


def test_weak_candidates_find_a_sideways_hand_the_palm_pass_misses(detector, sample_images, monkeypatch) -> None:
    from src.composites import background
    from utils import hands

    hand = cv2.imread(str(sample_images["paper"][6]))  # a roboflow crop: fingers sideways, palm cut off
    scene = background(np.random.default_rng(1))
    x, y, side = 400, 180, 120
    scene[y : y + side, x : x + side] = cv2.resize(hand, (side, side))
    found = hand_inputs(scene, detector, 224, "mobilenet")
    assert found.hand.found and found.hand.source == "search", found.hand
    lm = found.hand.landmarks[:, :2]
    inside = (lm > np.array([x, y]) - 10) & (lm < np.array([x, y]) + side + 10)
    assert np.mean(inside.all(1)) > 0.9
    assert found.features[0] == 1.0
    # The stages before it really miss this hand: without the candidate search no landmarks
    # are found, and the classifier falls back to the best candidate's region.
    monkeypatch.setattr(hands, "MAX_CANDIDATES", 0)
    assert hand_inputs(scene, detector, 224, "mobilenet").hand.source == "candidate"


def test_a_scene_without_landmarks_shows_the_classifier_the_likeliest_region(
    detector, sample_images, monkeypatch
) -> None:
    """The backbone sees the best weak palm's square, not the room squeezed to 224x224."""
    from src.composites import background
    from utils import hands
    from utils.images import backbone_preprocess

    hand = cv2.imread(str(sample_images["paper"][6]))
    scene = background(np.random.default_rng(1))
    x, y, side = 400, 180, 120
    scene[y : y + side, x : x + side] = cv2.resize(hand, (side, side))
    monkeypatch.setattr(hands, "PRESENCE_THRESHOLD", 1.01)  # no crop passes the landmark model
    found = hand_inputs(scene, detector, 224, "mobilenet")
    assert not found.hand.found and found.hand.source == "candidate", found.hand
    assert not found.features.any(), "no landmarks: the landmark half is zeros, as for no hand"
    rect = found.hand.rect
    assert x < rect.cx < x + side and y < rect.cy < y + side, rect
    assert rect.rotation == 0.0 and side * 0.5 < rect.width < 640
    view = hands.crop(cv2.cvtColor(scene, cv2.COLOR_BGR2RGB), rect, 224)
    np.testing.assert_allclose(found.image, backbone_preprocess(view, "mobilenet"), atol=1e-6)
    body = found.hand.as_json()
    assert (body["found"], body["source"], len(body["box"]), body["landmarks"]) == (False, "candidate", 4, [])


def test_a_crop_without_landmarks_is_still_classified_whole(detector, sample_images, monkeypatch) -> None:
    """Candidates stand in for a hand only in scenes: a tight crop is the hand already."""
    from utils import hands

    monkeypatch.setattr(hands, "PRESENCE_THRESHOLD", 1.01)
    crop_bgr = cv2.imread(str(sample_images["paper"][6]))
    assert min(crop_bgr.shape[:2]) < 2 * hands.PALM_INPUT
    assert hand_inputs(crop_bgr, detector, 224, "mobilenet").hand.source == "none"


def test_no_hand_gives_the_whole_image_and_zero_features(detector) -> None:
    blank = np.full((240, 320, 3), 127, np.uint8)
    found = hand_inputs(blank, detector, 224, "mobilenet")
    assert not found.hand.found and found.hand.source == "none"
    assert not found.features.any()
    np.testing.assert_allclose(found.image, 127 / 127.5 - 1, atol=1e-6)
    assert found.hand.as_json()["landmarks"] == []
