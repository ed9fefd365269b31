"""Fold what training needs and deployment does not: the damping constant and the pruning
mask into the stored weight (W * M * C becomes a plain conv weight), and BatchNorm into the
preceding conv (a bias appears). The folded module computes the same function in eval mode."""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeasc.models.cp_mobile import CPMobile
from edgeasc.models.cp_resnet import BasicBlock, CPResNet
from edgeasc.models.layers import Conv2d, DampedConv2d, DecomposedConv2d


@torch.no_grad()
def fold_model(model: CPResNet | CPMobile, fold_damping: bool = True, fold_bn: bool = True) -> nn.Module:
    """A deployable copy of `model` (eval mode); the original is left untouched."""
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2d) and (fold_damping or not isinstance(child, DampedConv2d)):
                setattr(parent, name, _plain_conv(child))
            elif isinstance(child, Conv2d):  # keep the damping Mul, fold only the mask
                child.fold_mask()
    if fold_bn:
        _fold_batchnorms(folded)
    return folded


def _plain_conv(conv: Conv2d) -> nn.Conv2d:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=conv.bias is not None)
    plain.weight.copy_(conv.effective_weight())
    if conv.bias is not None:
        plain.bias.copy_(conv.bias)
    return plain


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by bn (eval statistics) as one conv with a bias. A damped conv whose
    damping is kept (--no-fold-damping) stays one: BN scales its raw weight per output
    channel, and (W·s)·C = (W·C)·s, so the damping factor is untouched."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    bias = (bias - bn.running_mean) * scale + bn.bias
    if isinstance(conv, DampedConv2d):
        fused = copy.deepcopy(conv)  # like the plain path: the conv given is left as it was
        fused.weight.mul_(scale.view(-1, 1, 1, 1))
        fused.bias = nn.Parameter(bias.detach().clone())
        return fused
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(bias)
    return fused


def _fold_pair(owner: nn.Module, conv_name: str, bn_owner: nn.Module, bn_name: str) -> None:
    conv, bn = getattr(owner, conv_name), getattr(bn_owner, bn_name)
    if isinstance(conv, DecomposedConv2d):  # no nonlinearity inside: BN folds into the last 1x1
        conv.expand = fold_batchnorm(conv.expand, bn)
    else:
        setattr(owner, conv_name, fold_batchnorm(conv, bn))
    setattr(bn_owner, bn_name, nn.Identity())


def _fold_batchnorms(model: nn.Module) -> None:
    if isinstance(model, CPMobile):  # every BatchNorm directly follows its conv in one Sequential
        for seq in model.modules():
            if isinstance(seq, nn.Sequential) and len(seq) >= 2 and isinstance(seq[0], nn.Conv2d) \
                    and isinstance(seq[1], nn.BatchNorm2d):
                _fold_pair(seq, "0", seq, "1")
        return
    _fold_pair(model.stem, "0", model.stem, "1")
    _fold_pair(model.head, "0", model.head, "1")
    for block in model.modules():
        if isinstance(block, BasicBlock):
            _fold_pair(block, "conv1", block, "bn1")
            _fold_pair(block, "conv2", block, "bn2")
            if isinstance(block.shortcut, nn.Sequential):
                _fold_pair(block.shortcut, "0", block.shortcut, "1")


@torch.no_grad()
def max_abs_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a.eval()(x) - b.eval()(x)).abs().max())


class WaveformClassifier(nn.Module):
    """Raw audio at the frontend's sample rate -> logits: the torch frontend of the params' kind
    (exported as an ONNX STFT, the mel matrix (and A-weighting) as initializers), normalisation,
    the network."""

    def __init__(self, model: nn.Module, params, mean, std) -> None:
        super().__init__()
        from edgeasc.train.frontend import frontend_module

        self.frontend = frontend_module(params)
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 1, -1, 1))
        self.register_buffer("inv_std", 1.0 / torch.as_tensor(std, dtype=torch.float32).view(1, 1, -1, 1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model((self.frontend(waveform) - self.mean) * self.inv_std)
