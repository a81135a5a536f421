"""The changed box of a step: exactly what differs, inside the crop."""

import numpy as np

from server.sessions.interaction import changed_in_crop, changed_box


def test_changed_box_is_the_extent_of_the_difference():
    a = np.zeros((6, 7, 8), bool)
    b = a.copy()
    b[1:3, 2, 4:6] = True
    assert [x.tolist() for x in changed_box(a, b, a.shape)] == [[1, 2, 4], [3, 3, 6]]
    assert [x.tolist() for x in changed_box(None, b, a.shape)] == [[1, 2, 4], [3, 3, 6]]
    assert [x.tolist() for x in changed_box(b, b, a.shape)] == [[0, 0, 0], [0, 0, 0]]
    assert [x.tolist() for x in changed_box(None, None, a.shape)] == [[0, 0, 0], [0, 0, 0]]
    lo, hi = changed_in_crop(a, b, np.array([1, 1, 1]), np.array([5, 5, 7]))
    assert lo.tolist() == [1, 2, 4] and hi.tolist() == [3, 3, 6]
    lo, hi = changed_in_crop(b, b, np.array([1, 1, 1]), np.array([5, 5, 7]))
    assert lo.tolist() == hi.tolist() == [0, 0, 0]
