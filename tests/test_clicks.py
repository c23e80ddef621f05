"""Simulated clicks on hand-made masks whose answer is known."""

import numpy as np

from sam2_jax.evaluation.clicks import boundary_distance, mask_box, mask_iou, next_click


def canvas(h=40, w=40):
  return np.zeros((h, w), bool)


def test_square_first_click_at_centre():
  gt = canvas(30, 40)
  gt[5:16, 10:21] = True  # 11 x 11, centre (x=15, y=10)
  assert next_click(gt) == (15, 10, 1)
  assert boundary_distance(gt)[10, 15] == 6


def test_image_border_counts_as_boundary():
  gt = canvas(30, 40)
  gt[0:11, 0:11] = True  # touching the top-left corner: the centre, not the corner pixel
  assert next_click(gt) == (5, 5, 1)


def test_l_shape():
  gt = canvas()
  gt[5:35, 5:14] = True  # a thick vertical bar (9 wide, centre column x=9) ...
  gt[32:35, 14:36] = True  # ... with a thin foot
  # Every centre-column pixel at least 5 rows from the top is 5 from the boundary; the first in row-major
  # order wins: y = 9. The foot (3 high) is at most 2 deep.
  assert boundary_distance(gt).max() == 5
  assert next_click(gt) == (9, 9, 1)


def test_false_negative_deeper_than_false_positive_gives_positive_click():
  gt = canvas()
  gt[2:23, 2:23] = True
  pred = gt.copy()
  pred[5:16, 5:16] = False  # an 11 x 11 miss (depth 6) inside the object ...
  pred[30:35, 30:35] = True  # ... and a 5 x 5 false positive (depth 3) outside
  assert next_click(gt, pred) == (10, 10, 1)


def test_false_positive_only_gives_negative_click():
  gt = canvas()
  gt[2:12, 2:12] = True
  pred = gt.copy()
  pred[20:27, 25:32] = True  # 7 x 7, centre (x=28, y=23)
  assert next_click(gt, pred) == (28, 23, 0)


def test_false_positive_deeper_than_false_negative_gives_negative_click():
  gt = canvas()
  gt[2:12, 2:12] = True
  pred = gt.copy()
  pred[2:5, 2:12] = False  # a 3-row miss (depth 2)
  pred[20:29, 20:29] = True  # a 9 x 9 false positive (depth 5), centre (24, 24)
  assert next_click(gt, pred) == (24, 24, 0)


def test_tie_gives_negative_click():
  gt = canvas()
  gt[2:20, 2:20] = True
  pred = gt.copy()
  pred[5:10, 5:10] = False  # 5 x 5 miss, centre (7, 7)
  pred[25:30, 25:30] = True  # 5 x 5 false positive, centre (27, 27): same depth, negative wins (RITM's `>`)
  assert next_click(gt, pred) == (27, 27, 0)


def test_perfect_prediction_and_empty_object_give_no_click():
  gt = canvas()
  gt[3:9, 4:7] = True
  assert next_click(gt, gt.copy()) is None
  assert next_click(canvas()) is None


def test_box_and_iou():
  gt = canvas()
  gt[3:9, 4:7] = True
  np.testing.assert_array_equal(mask_box(gt), [4, 3, 6, 8])
  pred = canvas()
  pred[3:9, 4:10] = True
  assert mask_iou(pred, gt) == 0.5
  assert mask_iou(canvas(), canvas()) == 1.0
