"""The hand stage of the one preprocessing path: palm detection, a rotated hand crop, landmarks.

It follows MediaPipe Hands (`palm_detection_cpu.pbtxt`, `palm_detection_detection_to_roi`,
`hand_landmark_cpu.pbtxt`) with the models from the pinned npm package (`utils.hand_models`):

1. the frame is letterboxed to 192x192 and the palm detector's 2016 SSD anchors are decoded,
   scored with a sigmoid and merged by weighted non-maximum suppression (IoU 0.3);
2. the best palm becomes a rotated square (wrist -> middle-finger MCP points up, shifted half
   a palm towards the fingers, 2.6x the palm) that is cropped to 224x224;
3. the landmark model gives 21 landmarks and a presence score on that crop.

When no palm is found, or its crop holds no hand (presence < 0.5), the fallbacks are, in
order: the whole image at the best of its four 90-degree rotations (tight crops often defeat
the palm detector); the palm detector on overlapping tiles (a small hand in a big frame); and
a search over the detector's weak candidates (score >= 0.02), each at four quarter turns, with
the landmark model's presence score as the judge (sideways or cut-off hands in a scene, which
the detector scores low). A hand found in a scene (or found unsure in a crop) then gets
MediaPipe's tracking step once: the landmark model again, on the ROI its first landmarks
give. The crop is also the MobileNet input, so the classifier sees the hand, not the room.
Training, serving, the DAG and the webcam client all call `hand_inputs`; serving never imports
TensorFlow (LiteRT only).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

PALM_INPUT = 192
LANDMARK_INPUT = 224
PRESENCE_THRESHOLD = 0.5  # hand_landmark_cpu.pbtxt: ThresholdingCalculator
SURE_PRESENCE = 0.9  # the rotation search stops at the first turn this sure of a hand
MAX_PALMS_TRIED = 3  # landmark runs on the best palms until one holds a hand
TILE_FRACTION = 0.45
TILES_PER_SIDE = 3
PALM_SCORE_THRESHOLD = 0.5  # palm_detection_cpu.pbtxt: min_score_thresh
# The last fallback: the detector's weak candidates, best first, each tried at four quarter turns
# and accepted only if the landmark model sees a hand (measured on roboflow composites: finds 32 of
# the 50 hands the stages before it miss, and a hand in 1 of 50 empty scenes).
CANDIDATE_SCORE = 0.02
MAX_CANDIDATES = 10
# XNNPACK threads per interpreter: the stage runs under one lock, so both cores serve one image.
HAND_THREADS = 2
NMS_IOU = 0.3  # min_suppression_threshold, WEIGHTED, INTERSECTION_OVER_UNION
# SsdAnchorsCalculatorOptions of palm_detection_cpu.pbtxt (both palm models share them).
ANCHOR_OPTIONS: dict[str, Any] = {
    "num_layers": 4,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size": PALM_INPUT,
    "anchor_offset": 0.5,
    "strides": (8, 16, 16, 16),
    "aspect_ratios": (1.0,),
    "interpolated_scale_aspect_ratio": 1.0,
    "fixed_anchor_size": True,
}
# palm_detection_detection_to_roi: wrist (0) -> middle-finger MCP (2) at 90 degrees, then
# RectTransformationCalculator scale 2.6, shift_y -0.5, square_long.
ROI_SCALE, ROI_SHIFT_Y = 2.6, -0.5
# hand_landmarks_to_rect (MediaPipe's tracking ROI from the last landmarks): the wrist, the
# thumb's first joints and each finger's two lowest joints; scale 2.0, shift_y -0.1, square_long.
LANDMARK_ROI_POINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
LANDMARK_ROI_SCALE, LANDMARK_ROI_SHIFT_Y = 2.0, -0.1
CANDIDATE_SCALE = 4.0  # a scene's likeliest region when no landmarks were found (candidate_rect)

# Bump when anything above changes what the stage outputs: feature caches are keyed by it.
HAND_STAGE_VERSION = 10
# Frames are decoded at up to this many times the classifier's input side (a JPEG's reduced-scale
# decode): the hand stage cuts a small hand out of the frame, so it needs more pixels than 224.
DECODE_FACTOR = 4
TIPS = (4, 8, 12, 16, 20)
FINGERS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20))
# flags (found, presence) + 21 x (x, y, z) + 15 fingertip distances + 15 joint angles
HAND_FEATURES = 2 + 63 + 15 + 15
CONNECTIONS = (*tuple((f[i], f[i + 1]) for f in FINGERS for i in range(4)), (5, 9), (9, 13), (13, 17))


def ssd_anchors(options: dict[str, Any] = ANCHOR_OPTIONS) -> np.ndarray:
    """Anchor centres (N, 2) as MediaPipe's SsdAnchorsCalculator lays them out.

    Layers that share a stride are one feature map; each layer adds one anchor per aspect
    ratio plus one interpolated-scale anchor per cell. With `fixed_anchor_size` every anchor
    is 1x1, so only centres matter (2016 for the palm models).
    """
    if not options["fixed_anchor_size"]:
        raise ValueError("only fixed-size anchors are implemented (the palm models use them)")
    strides, n_layers = options["strides"], options["num_layers"]
    centres: list[np.ndarray] = []
    layer = 0
    while layer < n_layers:
        per_cell = 0
        last = layer
        while last < n_layers and strides[last] == strides[layer]:
            per_cell += len(options["aspect_ratios"]) + (1 if options["interpolated_scale_aspect_ratio"] > 0 else 0)
            last += 1
        side = math.ceil(options["input_size"] / strides[layer])
        ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        grid = np.stack([(xs + options["anchor_offset"]) / side, (ys + options["anchor_offset"]) / side], -1)
        centres.append(np.repeat(grid.reshape(-1, 2), per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Palm:
    """A palm in image pixels: box (x0, y0, x1, y1), 7 keypoints (x, y), score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float


def decode_palms(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, min_score: float = PALM_SCORE_THRESHOLD
) -> list[Palm]:
    """TensorsToDetectionsCalculator (x, y, w, h order, scale 192, sigmoid, clip 100) in the
    192x192 input's normalised coordinates, then weighted NMS; best first."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -100.0, 100.0)))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return []
    raw, anc = raw_boxes.reshape(-1, 18)[keep] / PALM_INPUT, anchors[keep]
    cx, cy = raw[:, 0] + anc[:, 0], raw[:, 1] + anc[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    keypoints = raw[:, 4:].reshape(-1, 7, 2) + anc[:, None, :]
    return weighted_nms(boxes, keypoints, scores[keep])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.where(area - inter > 0, inter / np.maximum(area - inter, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[Palm]:
    """MediaPipe's WEIGHTED non-max suppression: each cluster (IoU > 0.3 with the best
    remaining box, itself included) becomes one detection whose box and keypoints are the
    score-weighted mean of the cluster, keeping the best score."""
    order = np.argsort(-scores, kind="stable")
    out: list[Palm] = []
    while order.size:
        top = order[0]
        overlap = _iou(boxes[top], boxes[order]) > NMS_IOU
        overlap[0] = True
        members = order[overlap]
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        kps = (keypoints[members] * weights[:, :, None]).sum(0) / weights.sum()
        out.append(Palm(box=box.astype(np.float32), keypoints=kps.astype(np.float32), score=float(scores[top])))
        order = order[~overlap]
    return out


@dataclass(frozen=True)
class RotatedRect:
    """A rectangle in image pixels: centre, size and the image direction its "up" points to."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float  # radians, 0 = upright, positive turns "up" clockwise (MediaPipe's convention)

    def to_source(self, size: int) -> np.ndarray:
        """2x3 affine mapping crop pixels (size x size) to image pixels."""
        up = np.array([math.sin(self.rotation), -math.cos(self.rotation)])
        right = np.array([-up[1], up[0]])
        ax, ay = right * self.width / size, -up * self.height / size
        origin = np.array([self.cx, self.cy]) - 0.5 * size * (ax + ay)
        return np.array([[ax[0], ay[0], origin[0]], [ax[1], ay[1], origin[1]]], np.float64)

    def corners(self) -> np.ndarray:
        """(4, 2) corners in image pixels: top-left, top-right, bottom-right, bottom-left of the crop."""
        m = self.to_source(1)
        unit = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float64)
        return (unit @ m.T).astype(np.float32)


def palm_to_rect(palm: Palm) -> RotatedRect:
    """DetectionsToRects (rotation from keypoint 0 to 2, target 90 degrees) + RectTransformation."""
    (x0, y0), (x1, y1) = palm.keypoints[0], palm.keypoints[2]
    rotation = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    bx0, by0, bx1, by1 = (float(v) for v in palm.box)
    width, height = bx1 - bx0, by1 - by0
    up = np.array([math.sin(rotation), -math.cos(rotation)])
    centre = np.array([(bx0 + bx1) / 2, (by0 + by1) / 2]) - ROI_SHIFT_Y * height * up
    side = max(width, height) * ROI_SCALE
    return RotatedRect(float(centre[0]), float(centre[1]), side, side, rotation)


def landmarks_to_rect(landmarks: np.ndarray) -> RotatedRect:
    """MediaPipe's tracking ROI (HandLandmarksToRectCalculator + RectTransformation): rotation
    from the wrist to the knuckles' centre, the box of LANDMARK_ROI_POINTS in that rotated frame,
    2x its long side, shifted a tenth towards the fingers. A palm's ROI is a guess from 7 points;
    this one fits the hand the landmark model has already seen."""
    pts = landmarks[:, :2].astype(np.float64)
    wrist, knuckles = pts[0], ((pts[5] + pts[13]) / 2 + pts[9]) / 2
    rotation = math.pi / 2 - math.atan2(-(knuckles[1] - wrist[1]), knuckles[0] - wrist[0])
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    up = np.array([math.sin(rotation), -math.cos(rotation)])
    right = np.array([-up[1], up[0]])
    roi = pts[list(LANDMARK_ROI_POINTS)]
    u, v = roi @ right, roi @ up
    width, height = float(u.max() - u.min()), float(v.max() - v.min())
    centre = (u.max() + u.min()) / 2 * right + (v.max() + v.min()) / 2 * up - LANDMARK_ROI_SHIFT_Y * height * up
    side = max(width, height) * LANDMARK_ROI_SCALE
    return RotatedRect(float(centre[0]), float(centre[1]), side, side, rotation)


def candidate_rect(palm: Palm) -> RotatedRect:
    """An upright square of CANDIDATE_SCALE times a weak palm box, on its centre: a weak
    detection's keypoints (so its rotation and shift) are not to be trusted, and its box is
    often a fingertip or a knuckle (20-60 px on a 100-190 px hand), so the square is wider than
    MediaPipe's ROI and covers the hand whichever way it points."""
    bx0, by0, bx1, by1 = (float(v) for v in palm.box)
    side = max(bx1 - bx0, by1 - by0) * CANDIDATE_SCALE
    return RotatedRect((bx0 + bx1) / 2, (by0 + by1) / 2, side, side, 0.0)


def crop(rgb: np.ndarray, rect: RotatedRect, size: int) -> np.ndarray:
    """The rotated rectangle as a size x size RGB image (edges replicated, as MediaPipe pads)."""
    return cv2.warpAffine(
        rgb,
        rect.to_source(size),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def whole_image_rect(width: int, height: int, quarter_turns: int) -> RotatedRect:
    """The whole image, turned by 90-degree steps (the fallback's rotation search)."""
    w, h = (width, height) if quarter_turns % 2 == 0 else (height, width)
    return RotatedRect(width / 2, height / 2, float(w), float(h), quarter_turns * math.pi / 2)


@dataclass(frozen=True)
class Hand:
    """What the hand stage found in one image, in that image's pixels."""

    found: bool
    # "palm" (palm detector), "rotation" (whole-image fallback), "search" (weak candidates);
    # not found: "candidate" (a scene: the likeliest palm region is what the classifier sees) or "none"
    source: str
    presence: float
    rect: RotatedRect
    landmarks: np.ndarray | None = field(default=None, repr=False)  # (21, 3): x, y in pixels, z

    def as_json(self) -> dict[str, Any]:
        """The box and landmarks as the API returns them (pixels of the uploaded image)."""
        return {
            "found": self.found,
            "source": self.source,
            "presence": round(self.presence, 4),
            "box": [[round(float(x), 1), round(float(y), 1)] for x, y in self.rect.corners()],
            "landmarks": (
                [[round(float(x), 1), round(float(y), 1)] for x, y, _ in self.landmarks]
                if self.found and self.landmarks is not None
                else []
            ),
        }


class HandDetector:
    """Palm detector + landmark model in LiteRT; one lock, since interpreters are not thread-safe."""

    def __init__(self, palm_model: Path, landmark_model: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.palm = Interpreter(model_path=str(palm_model), num_threads=HAND_THREADS)
        self.landmark = Interpreter(model_path=str(landmark_model), num_threads=HAND_THREADS)
        for interp in (self.palm, self.landmark):
            interp.allocate_tensors()
        self.anchors = ssd_anchors()
        self._palm_out = self._outputs(self.palm)
        self._lm_out = self._outputs(self.landmark)
        self._lock = threading.Lock()
        self.tag = f"{Path(palm_model).stem}+{Path(landmark_model).stem}"

    @classmethod
    def from_dir(cls, directory: Path, complexity: int = 1) -> HandDetector:
        from utils.hand_models import model_paths

        return cls(*model_paths(directory, complexity))

    @staticmethod
    def _outputs(interp) -> dict[str, int]:
        return {d["name"]: d["index"] for d in interp.get_output_details()}

    def _invoke(self, interp, tensor: np.ndarray, outputs: dict[str, int]) -> dict[str, np.ndarray]:
        interp.set_tensor(interp.get_input_details()[0]["index"], tensor[None].astype(np.float32))
        interp.invoke()
        return {name: np.array(interp.get_tensor(i))[0] for name, i in outputs.items()}

    def scan(self, rgb: np.ndarray) -> tuple[list[Palm], list[Palm]]:
        """(palms at MediaPipe's threshold, weak candidates down to CANDIDATE_SCORE) in image
        pixels, best first, from one invoke on the letterboxed 192x192 input (zero border)."""
        h, w = rgb.shape[:2]
        scale = PALM_INPUT / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (PALM_INPUT - nw) // 2, (PALM_INPUT - nh) // 2
        canvas = np.zeros((PALM_INPUT, PALM_INPUT, 3), np.float32)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas[py : py + nh, px : px + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp) / np.float32(255)
        with self._lock:
            out = self._invoke(self.palm, canvas, self._palm_out)
        raw_boxes, raw_scores = (out["Identity"], out["Identity_1"])
        offset = np.array([px, py], np.float32)

        def back(xy: np.ndarray) -> np.ndarray:
            return (xy * PALM_INPUT - offset) / scale

        def decoded(min_score: float) -> list[Palm]:
            return [
                Palm(
                    box=np.concatenate([back(p.box[:2]), back(p.box[2:])]),
                    keypoints=back(p.keypoints),
                    score=p.score,
                )
                for p in decode_palms(raw_boxes, raw_scores, self.anchors, min_score)
            ]

        return decoded(PALM_SCORE_THRESHOLD), decoded(CANDIDATE_SCORE)

    def landmarks(self, rgb: np.ndarray, rect: RotatedRect) -> tuple[np.ndarray, float, np.ndarray]:
        """(21, 3) landmarks in image pixels, presence, and the 224x224 RGB crop they came from."""
        patch = crop(rgb, rect, LANDMARK_INPUT)
        with self._lock:
            out = self._invoke(self.landmark, patch / np.float32(255), self._lm_out)
        local = out["Identity"].reshape(21, 3)
        m = rect.to_source(LANDMARK_INPUT)
        xy = np.c_[local[:, :2], np.ones(21)] @ m.T
        z = local[:, 2] * rect.width / LANDMARK_INPUT
        return np.c_[xy, z].astype(np.float32), float(out["Identity_1"].reshape(-1)[0]), patch

    def _from_palms(self, rgb: np.ndarray, palms: list[Palm]) -> tuple[Hand, np.ndarray] | None:
        """The first of the best few palms whose crop really holds a hand."""
        for palm in palms[:MAX_PALMS_TRIED]:
            rect = palm_to_rect(palm)
            lms, presence, patch = self.landmarks(rgb, rect)
            if presence >= PRESENCE_THRESHOLD:
                return Hand(True, "palm", presence, rect, lms), patch
        return None

    def _tile_scan(self, rgb: np.ndarray) -> tuple[list[Palm], list[Palm]]:
        """`scan` on a 3x3 grid of overlapping square tiles (45 % of the long side), in image
        pixels: a hand a tenth of a webcam frame wide is too small for the detector's 192x192 view."""
        h, w = rgb.shape[:2]
        side = min(int(TILE_FRACTION * max(h, w)), min(h, w))
        sure: list[Palm] = []
        weak: list[Palm] = []
        n = TILES_PER_SIDE
        for y0 in sorted({round(i * (h - side) / (n - 1)) for i in range(n)}):
            for x0 in sorted({round(i * (w - side) / (n - 1)) for i in range(n)}):
                offset = np.array([x0, y0], np.float32)
                for found, into in zip(self.scan(rgb[y0 : y0 + side, x0 : x0 + side]), (sure, weak), strict=True):
                    into += [Palm(p.box + np.tile(offset, 2), p.keypoints + offset, p.score) for p in found]
        return sorted(sure, key=lambda p: -p.score), weak

    def _search(self, rgb: np.ndarray, candidates: list[Palm]) -> tuple[Hand, np.ndarray] | None:
        """The first weak candidate (best first, overlapping ones merged) whose crop at one of
        four quarter turns holds a hand: the detector often scores sideways or cut-off palms
        low, and gets their rotation wrong, while the landmark model still recognises them."""
        kept: list[Palm] = []
        for palm in sorted(candidates, key=lambda p: -p.score):
            if len(kept) >= MAX_CANDIDATES:
                break
            if not kept or (_iou(palm.box, np.stack([k.box for k in kept])) <= NMS_IOU).all():
                kept.append(palm)
        for palm in kept:
            found = self._turned(rgb, palm_to_rect(palm))
            if found:
                return found
        return None

    def _turned(self, rgb: np.ndarray, base: RotatedRect) -> tuple[Hand, np.ndarray] | None:
        """The region at the first of four quarter turns whose crop holds a hand."""
        for turns in range(4):
            rect = RotatedRect(base.cx, base.cy, base.width, base.height, base.rotation + turns * math.pi / 2)
            lms, presence, patch = self.landmarks(rgb, rect)
            if presence >= PRESENCE_THRESHOLD:
                return Hand(True, "search", presence, rect, lms), patch
        return None

    def _refined(self, rgb: np.ndarray, found: tuple[Hand, np.ndarray], scene: bool) -> tuple[Hand, np.ndarray]:
        """One more landmark pass on the ROI the first landmarks give (MediaPipe's tracking
        step). In a scene the first crop came from a palm box or a weak candidate, cut around a
        hand a few dozen pixels wide; the second fits the hand. In a crop it runs only when the
        first pass was unsure (presence < SURE_PRESENCE): a sure one is kept, which saves the
        invoke on most uploads. Kept only if the new crop still holds a hand."""
        hand = found[0]
        assert hand.landmarks is not None
        if not scene and hand.presence >= SURE_PRESENCE:
            return found
        rect = landmarks_to_rect(hand.landmarks)
        lms, presence, refined = self.landmarks(rgb, rect)
        if presence < PRESENCE_THRESHOLD:
            return found
        return Hand(True, hand.source, presence, rect, lms), refined

    def find(self, rgb: np.ndarray) -> tuple[Hand, np.ndarray]:
        """The hand and the 224x224 RGB crop the classifier should see.

        Palm detector first (MediaPipe's path); then the whole image at the best of four
        quarter turns (tight crops); then the palm detector on tiles (small hands in big frames);
        then the weak candidates of both scans; in a scene where all of those fail, the best
        candidate's region without landmarks. Each stage runs only when the ones before failed;
        the last three only in scenes (`is_scene`): a smaller frame is a hand crop, and the
        classifier learnt such crops whole when no hand is found in them. A hand found in a scene,
        or found unsure in a crop, gets one more landmark pass on its own ROI (`_refined`).
        """
        h, w = rgb.shape[:2]
        scene = is_scene(w, h)
        palms, weak = self.scan(rgb)
        found = self._from_palms(rgb, palms)
        if found:
            return self._refined(rgb, found, scene)
        best: tuple[float, RotatedRect, np.ndarray, np.ndarray] | None = None
        for turns in range(4):
            rect = whole_image_rect(w, h, turns)
            lms, presence, patch = self.landmarks(rgb, rect)
            if best is None or presence > best[0]:
                best = (presence, rect, lms, patch)
            if presence >= SURE_PRESENCE:  # no rotation can do much better; saves up to 3 invokes
                break
        assert best is not None
        presence, rect, lms, patch = best
        if presence >= PRESENCE_THRESHOLD:
            return self._refined(rgb, (Hand(True, "rotation", presence, rect, lms), patch), scene)
        if scene:
            tile_palms, tile_weak = self._tile_scan(rgb)
            candidates = weak + tile_weak
            found = self._from_palms(rgb, tile_palms) or self._search(rgb, candidates)
            if found:
                return self._refined(rgb, found, scene)
            if candidates:
                # No landmarks, but the detector's best guess usually is the hand (28 of 35 such
                # roboflow composites): the classifier sees that region, not a 640x480 room
                # squeezed until the hand is a few pixels.
                rect = candidate_rect(max(candidates, key=lambda p: p.score))
                return Hand(False, "candidate", presence, rect, None), crop(rgb, rect, LANDMARK_INPUT)
        upright = whole_image_rect(w, h, 0)
        return Hand(False, "none", presence, upright, None), crop(rgb, upright, LANDMARK_INPUT)


def is_scene(width: int, height: int) -> bool:
    """A frame at least twice the detector's input on its short side is a scene (a webcam
    frame, a room); a smaller one is a hand crop, which the stages after the rotation search
    (tiles, weak candidates, the landmark refinement) would only cost time and accuracy on."""
    return min(width, height) >= 2 * PALM_INPUT


def landmark_features(hand: Hand) -> np.ndarray:
    """A (HAND_FEATURES,) vector: zeros (and found = 0) when no hand was found.

    Wrist-centred, rotated so the wrist -> middle-finger MCP axis points up and scaled by its
    length (so the camera's distance and roll do not matter), plus fingertip distances
    (tip-tip and tip-wrist) and the bend angle at each finger joint (in units of pi).
    """
    out = np.zeros(HAND_FEATURES, np.float32)
    if not hand.found or hand.landmarks is None:
        return out
    pts = hand.landmarks.astype(np.float64)
    rel = pts - pts[0]
    axis = rel[9, :2]
    scale = float(np.linalg.norm(axis)) or float(np.abs(rel[:, :2]).max()) or 1.0
    up = axis / (np.linalg.norm(axis) or 1.0)
    right = np.array([-up[1], up[0]])
    norm = np.stack([rel[:, :2] @ right, rel[:, :2] @ up, rel[:, 2]], 1) / scale
    dists = [np.linalg.norm(norm[a] - norm[b]) for i, a in enumerate(TIPS) for b in TIPS[i + 1 :]]
    dists += [np.linalg.norm(norm[t]) for t in TIPS]
    angles = []
    for chain in FINGERS:
        for j in range(1, 4):
            v1, v2 = norm[chain[j]] - norm[chain[j - 1]], norm[chain[j + 1]] - norm[chain[j]]
            cos = float(v1 @ v2) / ((np.linalg.norm(v1) * np.linalg.norm(v2)) or 1.0)
            angles.append(math.acos(max(-1.0, min(1.0, cos))) / math.pi)
    out[:] = np.concatenate([[1.0, hand.presence], norm.reshape(-1), dists, angles])
    return out


# Mirroring the frame negates each normalised landmark's x (the hand is turned so that the
# wrist -> middle-finger axis points up) and leaves y, z, presence, distances and angles as
# they are: the landmark half of the mirrored view costs no second landmark run.
MIRROR_SIGNS = np.ones(HAND_FEATURES, np.float32)
MIRROR_SIGNS[2:65:3] = -1.0


def mirrored_features(features: np.ndarray) -> np.ndarray:
    """`landmark_features` of the left-right mirrored frame, from the frame's own features."""
    return features * MIRROR_SIGNS


# The classifier's view of a found hand: a square around the landmarks with 15 % margin each
# side, axis-aligned, as the dataset crops were cut; when that square would cover at least
# half of the frame's long side the frame already is a hand crop and is used whole.
CROP_MARGIN = 1.3
WHOLE_FRAME_FRACTION = 0.5


def hand_square(hand: Hand, width: int, height: int) -> RotatedRect | None:
    """The axis-aligned square the classifier sees for a small hand, or None for the whole frame."""
    if hand.source == "candidate":
        return hand.rect
    if not hand.found or hand.landmarks is None:
        return None
    (x0, y0), (x1, y1) = hand.landmarks[:, :2].min(0), hand.landmarks[:, :2].max(0)
    side = float(max(x1 - x0, y1 - y0)) * CROP_MARGIN
    if side >= WHOLE_FRAME_FRACTION * max(width, height):
        return None
    return RotatedRect(float(x0 + x1) / 2, float(y0 + y1) / 2, side, side, 0.0)


@dataclass(frozen=True)
class HandInputs:
    """The fused model's two inputs and the hand they came from."""

    image: np.ndarray  # (size, size, 3) float32, the backbone's own scaling
    features: np.ndarray  # (HAND_FEATURES,) float32
    hand: Hand


def hand_inputs(bgr: np.ndarray, detector: HandDetector, size: int, backbone: str) -> HandInputs:
    """BGR frame -> (the hand's square crop, or the whole frame, as the backbone's input;
    landmark features). A whole frame gets exactly `preprocess_image`'s tensor."""
    from utils.images import backbone_preprocess, to_rgb_resized

    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    elif bgr.shape[2] == 4:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2BGR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    hand, _ = detector.find(rgb)
    square = hand_square(hand, rgb.shape[1], rgb.shape[0])
    view = to_rgb_resized(bgr, size) if square is None else crop(rgb, square, size)
    return HandInputs(backbone_preprocess(view, backbone), landmark_features(hand), hand)
