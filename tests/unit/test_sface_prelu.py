"""SFace's ChannelPReLU is nn.PReLU rewritten for onnxruntime's blocked layout: it must compute the same function."""

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgepipe.models.zoo.sface import ChannelPReLU

_FLOATS = st.floats(-1e4, 1e4, width=32)


@settings(deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
              elements=_FLOATS),
       st.lists(st.floats(-2, 2, width=32), min_size=5, max_size=5))
def test_channel_prelu_equals_torch_prelu(x, slopes):
    channels = x.shape[1]
    act = ChannelPReLU(channels)
    with torch.no_grad():
        act.weight.copy_(torch.tensor(slopes[:channels]))
        ours, reference = act(torch.from_numpy(x)), F.prelu(torch.from_numpy(x), act.weight)
    # slope * x + (1 - slope) * x for x > 0 is x up to rounding: a few ulp of the larger term
    tolerance = 4 * np.finfo(np.float32).eps * float(np.abs(x).max()) * (1 + max(abs(s) for s in slopes[:channels]))
    assert torch.allclose(ours, reference, rtol=0, atol=tolerance)
    negative = torch.from_numpy(x) <= 0
    assert torch.equal(ours[negative], reference[negative])  # x <= 0: slope * x + (1 - slope) * 0, exactly
