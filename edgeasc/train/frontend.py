"""The perceptual mel frontend in torch: batched, differentiable, exportable.

Same maths as `edgeasc.runtime.features.perceptual_mel` (whose constants it uses); tests keep the
two equal. Used for batched extraction on a GPU and for exporting a waveform -> logits
graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeasc.runtime.features import FeatureParams, a_weighting, mel_filterbank


class PerceptualMel(nn.Module):
    """(batch, channels, samples) at params.sample_rate -> (batch, channels, n_mels, frames)."""

    def __init__(self, params: FeatureParams | None = None) -> None:
        super().__init__()
        self.params = p = params or FeatureParams()
        fb = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
        self.register_buffer("window", torch.hann_window(p.n_fft, periodic=True), persistent=False)
        self.register_buffer("mel", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        # mel(dB + A) = mel(dB) + mel(A): the A-weighting becomes one offset per mel band
        aw = fb @ a_weighting(p.sample_rate, p.n_fft)
        self.register_buffer("a_weight_mel", torch.from_numpy(aw.astype(np.float32))[:, None],
                             persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        p = self.params
        b, c, n = waveform.shape
        spec = torch.stft(waveform.reshape(b * c, n), p.n_fft, p.hop_length, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (b*c, bins, frames)
        peak = power.amax(dim=(1, 2), keepdim=True).clamp_min(p.amin)
        floor = torch.clamp_min(peak * 10.0 ** (-p.top_db / 10.0), p.amin)
        db = 10.0 * torch.log10(torch.maximum(power, floor))
        mel = torch.matmul(self.mel, db) + self.a_weight_mel
        return mel.reshape(b, c, p.n_mels, -1)


def perceptual_mel_torch(waveform: torch.Tensor, params: FeatureParams | None = None) -> torch.Tensor:
    """Functional form: (channels, samples) or (batch, channels, samples)."""
    squeeze = waveform.dim() == 2
    x = waveform[None] if squeeze else waveform
    out = PerceptualMel(params).to(x.device)(x.float())
    return out[0] if squeeze else out


__all__ = ["PerceptualMel", "perceptual_mel_torch"]
