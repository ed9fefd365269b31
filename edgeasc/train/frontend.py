"""The frontends in torch: batched, differentiable, exportable.

Same maths as `edgeasc.runtime.features` (perceptual_mel, log_mel; whose constants they use);
tests keep each pair equal. Used for batched extraction on a GPU and for exporting a
waveform -> logits graph; `frontend_module` picks the one FeatureParams name.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeasc.runtime.features import (
    D24_PARAMS,
    FeatureParams,
    a_weighting,
    kind_filterbank,
    mel_filterbank,
)


class PerceptualMel(nn.Module):
    """(batch, channels, samples) at params.sample_rate -> (batch, channels, n_mels, frames)."""

    def __init__(self, params: FeatureParams | None = None) -> None:
        super().__init__()
        self.params = p = params or FeatureParams()
        if p.kind != "perceptual":
            raise ValueError(f"PerceptualMel computes the perceptual frontend, these parameters are kind {p.kind!r}")
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


class LogMel(nn.Module):
    """The organisers' log-mel (kind "logmel"), as torchaudio's MelSpectrogram(power=2, norm=None)
    then log(x + offset): (batch, channels, samples) -> (batch, channels, n_mels, frames).

    The STFT runs in float64 and only the power is rounded to float32 (as the numpy runtime's
    `fft_dtype` says why: a float32 FFT's rounding noise moves near-silent bands by up to ~1e-3
    in the log); within 1e-6 of librosa. Two exceptions compute in float32, as torchaudio does:
    an ONNX export (the waveform-in graph stays float32 for every runtime) and a device without
    float64 (MPS)."""

    def __init__(self, params: FeatureParams = D24_PARAMS) -> None:
        super().__init__()
        if params.kind != "logmel":
            raise ValueError(f"LogMel computes the logmel frontend, these parameters are kind {params.kind!r}")
        self.params = p = params
        win = p.window_length
        if not 0 < win <= p.n_fft:
            raise ValueError(f"win_length {win} must be in 1..n_fft ({p.n_fft})")
        # the short window zero-padded to n_fft here, centred as torch.stft would pad it: the exported
        # graph then holds one n_fft window and needs no win_length support from the exporter
        window = torch.zeros(p.n_fft, dtype=torch.float64)
        left = (p.n_fft - win) // 2
        window[left:left + win] = torch.hann_window(win, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)
        # the float64 one is kept outside the buffers: .half()/.float() on the module must not round it
        self._window64 = window
        fb = kind_filterbank(p)
        if not fb.any(axis=1).all():
            raise ValueError("a mel filter covers no FFT bin: use fewer mel bands or a longer n_fft")
        self.register_buffer("mel", torch.from_numpy(fb.astype(np.float32)), persistent=False)

    def _power(self, x: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 (rows, bins, frames), float32."""
        p = self.params
        if torch.onnx.is_in_onnx_export() or x.device.type == "mps":
            spec = torch.stft(x.float(), p.n_fft, p.hop_length, window=self.window.float(),
                              center=True, pad_mode="reflect", return_complex=True)
            return spec.real.square() + spec.imag.square()
        spec = torch.stft(x.double(), p.n_fft, p.hop_length, window=self._window64.to(x.device),
                          center=True, pad_mode="reflect", return_complex=True)
        return (spec.real.square() + spec.imag.square()).float()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        p = self.params
        b, c, n = waveform.shape
        power = self._power(waveform.reshape(b * c, n))  # (b*c, bins, frames)
        mel = torch.log(torch.matmul(self.mel.float(), power) + p.log_offset)
        # in the input's precision, as before the float64 STFT (a half module gets half features)
        return mel.reshape(b, c, p.n_mels, -1).to(waveform.dtype if waveform.is_floating_point() else mel.dtype)


def frontend_module(params: FeatureParams | None = None) -> nn.Module:
    """The torch frontend of `params`' kind."""
    p = params or FeatureParams()
    if p.kind == "perceptual":
        return PerceptualMel(p)
    if p.kind == "logmel":
        return LogMel(p)
    raise ValueError(f"unknown frontend kind {p.kind!r}")


def features_torch(waveform: torch.Tensor, params: FeatureParams | None = None) -> torch.Tensor:
    """Functional form of any kind: (channels, samples) or (batch, channels, samples)."""
    squeeze = waveform.dim() == 2
    x = waveform[None] if squeeze else waveform
    out = frontend_module(params).to(x.device)(x.float())
    return out[0] if squeeze else out


def perceptual_mel_torch(waveform: torch.Tensor, params: FeatureParams | None = None) -> torch.Tensor:
    """Functional form: (channels, samples) or (batch, channels, samples)."""
    squeeze = waveform.dim() == 2
    x = waveform[None] if squeeze else waveform
    out = PerceptualMel(params).to(x.device)(x.float())
    return out[0] if squeeze else out


__all__ = ["LogMel", "PerceptualMel", "features_torch", "frontend_module", "perceptual_mel_torch"]
