import pytest
import torch
from helpers import annotation_config, bright_annotation_net, dice, phantom, phantom_points
from pydantic import ValidationError

from engines.config.model import ModelConfig
from engines.inferers import FlipAveraged, flip_averaged
from engines.tasks.dextr3d import Dextr3dEngine


def running_sum(x: torch.Tensor) -> torch.Tensor:
    """A 'network' that is not flip-equivariant: cumulative sum along the first spatial axis."""
    return torch.cumsum(x, dim=2)


def test_flip_averaging_maps_outputs_back_to_the_input_grid():
    x = torch.ones(1, 1, 5, 3, 2)
    plain = running_sum(x)[0, 0, :, 0, 0]
    averaged = FlipAveraged(running_sum, [[0]])(x)[0, 0, :, 0, 0]
    assert plain.tolist() == [1, 2, 3, 4, 5]
    assert averaged.tolist() == [3, 3, 3, 3, 3]  # (1..5 + 5..1) / 2
    # flips along other axes leave this network's output unchanged
    assert torch.equal(FlipAveraged(running_sum, [[1], [2], [1, 2]])(x), running_sum(x))


def test_engine_with_flip_averaging_calls_the_network_once_per_flip():
    calls = []

    def counting(x):
        calls.append(x.shape)
        return bright_annotation_net(x)

    engine = Dextr3dEngine("t", ModelConfig.model_validate(annotation_config(tta_flips=[[0], [1], [2]])), counting)
    volume, mask = phantom()
    result = engine.infer(volume, {"points": phantom_points(mask)})
    assert len(calls) == 4 and dice(result.mask, mask) > 0.95


def test_every_input_channel_is_mirrored_and_the_output_mirrored_back():
    x = torch.randn(1, 5, 8, 6, 4)
    seen = []

    def first_channel(inp):
        seen.append(inp.clone())
        return inp[:, :1]

    out = FlipAveraged(first_channel, [[0], [1, 2]])(x)
    assert torch.equal(seen[1], torch.flip(x, [2])) and torch.equal(seen[2], torch.flip(x, [3, 4]))
    torch.testing.assert_close(out, x[:, :1])  # an equivariant network keeps its output
    assert flip_averaged(first_channel, []) is first_channel and isinstance(flip_averaged(first_channel, [[0]]),
                                                                            FlipAveraged)


@pytest.mark.parametrize("flips", [[[3]], [[]], [[0, 0]], [[0, 1], [1, 0]], [[0]] * 8])
def test_bad_flip_axes_are_refused(flips):
    with pytest.raises(ValidationError, match="tta_flips"):
        ModelConfig.model_validate(annotation_config(tta_flips=flips))
