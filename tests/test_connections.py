"""Links between the channels of neighbouring layers, by weight: equal to the kernels' norms,
chained through several convolutions, and refused (with the reason) where a side branch, a
shortcut or a Linear breaks the chain."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from untouched import assert_untouched, fingerprint

import cnnviz
from cnnviz import CnnvizError
from cnnviz.analyses.connections import kernel_norms


def brute_force(weight: torch.Tensor, groups: int, transposed: bool = False) -> torch.Tensor:
    """out x in: the L2 norm of the kernel from each input channel to each output channel."""
    if transposed:
        ins, per_group_out = weight.shape[:2]
        outs = per_group_out * groups
    else:
        outs, ins = weight.shape[0], weight.shape[1] * groups
    result = torch.zeros(outs, ins)
    for o in range(outs):
        for i in range(ins):
            if transposed:
                group = i // (ins // groups)
                if o // per_group_out == group:
                    result[o, i] = weight[i, o % per_group_out].norm()
            else:
                group = o // (outs // groups)
                if i // (ins // groups) == group:
                    result[o, i] = weight[o, i % (ins // groups)].norm()
    return result


def test_neighbouring_convolutions_are_linked_by_their_kernels_norms():
    photos = cnnviz.load_model("builtin:photos")
    before = fingerprint(photos.module)
    first, second, third = cnnviz.connections(photos, ["features.0", "features.3", "features.7", "features.10"])
    assert_untouched(photos.module, before)
    w3, w7 = photos.module.features[3].weight.detach(), photos.module.features[7].weight.detach()
    torch.testing.assert_close(first.strength, brute_force(w3, 1))
    assert first.through == ["features.3"] and first.source == "features.0" and first.target == "features.3"
    assert second.strength.shape == (32, 16) and third.strength.shape == (32, 32)
    # a unit's strongest inputs and outputs, strongest first
    row = brute_force(w7, 1)[5]
    expected = [int(i) for i in row.argsort(descending=True)[:3]]
    assert [channel for channel, _ in second.strongest_inputs(5, 3)] == expected
    assert second.strongest_inputs(5, 3)[0][1] == pytest.approx(float(row.max()))
    column = brute_force(w7, 1)[:, 2]
    assert [channel for channel, _ in second.strongest_outputs(2, 4)] == [int(i) for i in column.argsort(descending=True)[:4]]
    # through two convolutions (BN, ReLU and pooling between): the sum over paths of the products
    [chained] = cnnviz.connections(photos, ["features.0", "features.7"])
    assert chained.through == ["features.3", "features.7"]
    torch.testing.assert_close(chained.strength, brute_force(w7, 1) @ brute_force(w3, 1))
    assert "sum over paths" in chained.how


@pytest.mark.parametrize("groups, transposed", [(1, False), (2, False), (4, False), (2, True)])
def test_grouped_and_transposed_kernels(groups, transposed):
    torch.manual_seed(groups)
    layer = (nn.ConvTranspose2d(8, 12, 3, groups=groups) if transposed else nn.Conv2d(8, 12, 3, groups=groups))
    torch.testing.assert_close(kernel_norms(layer), brute_force(layer.weight.detach(), groups, transposed))


def test_side_branches_shortcuts_and_linear_layers_break_the_chain():
    resnet = torchvision.models.resnet18()
    inside, across, to_fc = cnnviz.connections(resnet, ["layer1.0.conv1", "layer1.0.conv2", "layer2.1.conv1", "fc"])
    assert isinstance(inside, cnnviz.Connection) and inside.through == ["layer1.0.conv2"]
    assert not across.linked and "layer2.0.downsample.0 takes 64x56x56" in across.why  # the shortcut's convolution
    assert not to_fc.linked and "not one chain" in to_fc.why
    mobile = torchvision.models.mobilenet_v3_small()
    [gated] = cnnviz.connections(mobile, ["features.1.block.0.0", "features.1.block.2.0"])
    assert not gated.linked and "side branch" in gated.why  # the squeeze-excite gate is not a path of channels
    lenet = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))
    lenet.input_size = (28, 28)
    [through_linear] = cnnviz.connections(lenet, ["0", "3"])
    assert "2 (Flatten) runs between 0 and 3" in through_linear.why
    with pytest.raises(CnnvizError, match="whole layers"):
        cnnviz.connections(resnet, ["layer1.0.conv1:3", "layer1.0.conv2"])
