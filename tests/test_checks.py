"""The shared argument checks of core/checks.py."""

import numpy as np
import pytest

from cnnviz_widgets.core import checks
from cnnviz_widgets.core.errors import CnnvizError


@pytest.mark.parametrize("value", [0, 7, np.int64(3), np.uint8(7)])
def test_an_index_in_range_comes_back_as_an_int(value):
    index = checks.index("channel", value, 8, "layer 'conv1' has 8 channels")
    assert index == value and type(index) is int


@pytest.mark.parametrize("value", [8, -1, True, np.bool_(False), 2.0, "3", None])
def test_anything_else_is_refused_with_the_range_to_use(value):
    with pytest.raises(CnnvizError, match=rf"channel {value} is out of range: layer 'conv1' has 8 channels, so use 0\.\.7\.") as raised:
        checks.index("channel", value, 8, "layer 'conv1' has 8 channels")
    assert isinstance(raised.value, ValueError)


def test_the_problem_can_be_worded_for_the_thing_indexed():
    with pytest.raises(CnnvizError, match=r"^Filter 9 does not exist: layer 'c' has 4 filters, so use 0\.\.3\.$"):
        checks.index("Filter", 9, 4, "layer 'c' has 4 filters", problem="does not exist")
