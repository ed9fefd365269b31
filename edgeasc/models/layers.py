"""Reusable convolution layers of the CP-ResNet family."""

from __future__ import annotations

import torch
from torch import nn


def damping_matrix(kernel_h: int, kernel_w: int, floor: float = 0.1) -> torch.Tensor:
    """The frequency-damping constant C of shape (kernel_h, kernel_w).

    1 at the centre row, falling linearly to `floor` at the outermost rows along the
    frequency axis (weight axis 2); constant along time. 1xk kernels are untouched.
    """
    if kernel_h < 3:
        return torch.ones(kernel_h, kernel_w)
    centre = (kernel_h - 1) / 2
    rows = torch.arange(kernel_h, dtype=torch.float64)
    profile = 1.0 - (1.0 - floor) * (rows - centre).abs() / centre
    return profile.float().unsqueeze(1).expand(kernel_h, kernel_w).contiguous()


class PruneGate(torch.autograd.Function):
    """Gate pruning's gate: 1 where the score is >= 0, else 0; the backward pass goes straight
    through with the derivative of a sigmoid, so that scores near 0 learn fastest."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores)
        return (scores >= 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (scores,) = ctx.saved_tensors
        s = torch.sigmoid(scores)
        return grad * s * (1 - s)


class Conv2d(nn.Conv2d):
    """nn.Conv2d whose applied weight may carry a pruning mask: conv(x, W * M).

    The raw W keeps its values under the mask and still gets the dense gradient (forward
    W * M, backward straight through), so pruned weights can come back when the mask is
    recomputed; without it the weights fixup starts at zero (the head, every second conv) are
    pruned first and never return, and a strongly pruned network outputs a constant.
    `fold_mask` makes the pruning permanent.
    The mask is a non-persistent buffer owned by the pruner, which saves it itself.
    """

    gate_scores: torch.Tensor | None = None  # gate pruning (compress/gate.py): not a parameter of the network

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("weight_mask", None, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        """W * M: what pruning leaves (damping excluded)."""
        if self.gate_scores is not None:
            return self.weight * PruneGate.apply(self.gate_scores)
        if self.weight_mask is None:
            return self.weight
        w = self.weight
        return w + (w * self.weight_mask - w).detach()  # forward W*M, dense gradient to W

    def effective_weight(self) -> torch.Tensor:
        """The weight the convolution applies."""
        return self.masked_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def fold_mask(self) -> None:
        if self.gate_scores is not None:
            self.weight.mul_((self.gate_scores >= 0).to(self.weight.dtype))
            self.gate_scores = None
        if self.weight_mask is not None:
            self.weight.mul_(self.weight_mask)
            self.weight_mask = None


class DampedConv2d(Conv2d):
    """conv(x, W * C): the raw weight W is trained, C is a constant (not a parameter).

    C is a non-persistent buffer: it follows .to(device/dtype) but is rebuilt from the
    config rather than stored, so a checkpoint cannot disagree with its own config.
    """

    def __init__(self, *args, damping_floor: float = 0.1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.damping_floor = float(damping_floor)
        c = damping_matrix(*self.kernel_size, floor=self.damping_floor)
        self.register_buffer("damping", c.view(1, 1, *self.kernel_size), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        return super().effective_weight() * self.damping

    def extra_repr(self) -> str:
        return super().extra_repr() + f", damping_floor={self.damping_floor}"


def conv2d(in_c: int, out_c: int, kernel: int, stride: int = 1, padding: int = 0,
           damped: bool = False, damping_floor: float = 0.1) -> Conv2d:
    """A bias-free conv; damped only where damping changes something (kernel height >= 3)."""
    if damped and kernel >= 3:
        return DampedConv2d(in_c, out_c, kernel, stride, padding, bias=False,
                            damping_floor=damping_floor)
    return Conv2d(in_c, out_c, kernel, stride, padding, bias=False)


class DecomposedConv2d(nn.Module):
    """Cin x Cout x k x k as 1x1 (Cin -> Cout/Z) -> kxk (Cout/Z -> Cout/Z) -> 1x1 (Cout/Z -> Cout).

    No normalisation or nonlinearity inside (paper section 3.2); only the middle kxk conv
    is damped.
    """

    def __init__(self, in_c: int, out_c: int, kernel: int, stride: int = 1, padding: int = 0,
                 factor: int = 4, damped: bool = False, damping_floor: float = 0.1,
                 mids: tuple[int, int] | None = None) -> None:
        super().__init__()
        if mids is None:  # channel pruning may leave the two inner widths anything (`mids`)
            if out_c % factor:
                raise ValueError(f"out channels {out_c} not divisible by Z={factor}")
            mids = (out_c // factor, out_c // factor)
        self.in_channels, self.out_channels = in_c, out_c
        self.kernel_size, self.factor = (kernel, kernel), factor
        self.reduce = Conv2d(in_c, mids[0], 1, bias=False)
        self.spatial = conv2d(mids[0], mids[1], kernel, stride, padding, damped, damping_floor)
        self.expand = Conv2d(mids[1], out_c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.spatial(self.reduce(x)))


def conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight a conv actually applies (damping and pruning mask included)."""
    return conv.effective_weight() if isinstance(conv, Conv2d) else conv.weight


__all__ = ["Conv2d", "DampedConv2d", "DecomposedConv2d", "conv2d", "conv_weight", "damping_matrix"]
