"""The hand drawn on frames: box and skeleton where the API says, a note when there is none."""

from __future__ import annotations

import numpy as np

from inference.overlay import draw_hand, draw_prediction


def _hand(found: bool = True) -> dict:
    landmarks = [[100 + 5 * i, 150 + 3 * i] for i in range(21)] if found else []
    return {
        "found": found,
        "source": "palm",
        "presence": 0.9,
        "box": [[80, 120], [240, 120], [240, 260], [80, 260]],
        "landmarks": landmarks,
    }


def test_the_box_and_landmarks_are_drawn_where_the_api_says() -> None:
    frame = np.zeros((320, 320, 3), np.uint8)
    draw_hand(frame, _hand(), (0, 255, 0))
    assert frame[120, 160].any() and frame[260, 160].any()  # box edges
    assert frame[150, 100].any() and frame[210, 200].any()  # first and last landmark
    assert not frame[40, 40].any() and not frame[300, 300].any()


def test_no_hand_draws_nothing_and_says_so() -> None:
    frame = np.zeros((320, 320, 3), np.uint8)
    draw_hand(frame, _hand(found=False))
    assert not frame.any()
    with_note = draw_prediction(np.zeros((320, 320, 3), np.uint8), "rock", 0.9, hand=_hand(found=False))
    without = draw_prediction(np.zeros((320, 320, 3), np.uint8), "rock", 0.9, hand=None)
    banner = slice(0, 40)
    assert with_note[banner, 160:].sum() > without[banner, 160:].sum()  # "no hand found" on the right


def test_a_scenes_likeliest_region_is_drawn_grey_and_still_says_no_hand() -> None:
    """`candidate`: no landmarks were found, but this region is what the classifier saw."""
    hand = {**_hand(found=False), "source": "candidate"}
    frame = np.zeros((320, 320, 3), np.uint8)
    draw_hand(frame, hand, (0, 255, 0))
    edge = frame[120, 160].astype(int)
    assert edge[0] == edge[1] == edge[2] > 100 and frame[260, 160].any()  # the box, in grey, not green
    assert not frame[150, 100].any() and not frame[200, 160].any()  # no skeleton
    with_note = draw_prediction(np.zeros((320, 320, 3), np.uint8), "rock", 0.9, hand=hand)
    without = draw_prediction(np.zeros((320, 320, 3), np.uint8), "rock", 0.9, hand=None)
    assert with_note[0:40, 160:].sum() > without[0:40, 160:].sum()  # "no hand found"
