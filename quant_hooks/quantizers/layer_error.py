"""Squared error of a layer's output for candidate quantized inputs, summed over calibration inputs.

A search over input quantizers (NoisyQuant's noise search) scores each candidate by ``Σ‖f̂(a) − f(x)‖²``: the
layer with its quantized weight applied to the candidate's quantized input ``a``, against the float layer on the
clean input ``x``. :class:`LayerFnError` computes it from the layer as a function; :class:`LinearOutputError`
computes the same sum for a linear layer from its weights, without forming the output where the layer widens.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .errors import QuantizerError


def _sum_squares(t: torch.Tensor) -> float:
    """``Σ t²`` (float32 products and row sums, the rows summed in float64); ``t`` is overwritten."""
    rows = t.square_().reshape(-1, t.shape[-1]) if t.dim() else t.square_().reshape(1, 1)
    return float(rows.sum(-1).double().sum())


def _sum_products(a: torch.Tensor, b: torch.Tensor) -> float:
    """``Σ a·b`` of two ``[rows, n]`` tensors (float32 row sums, summed in float64)."""
    return float(torch.linalg.vecdot(a, b).double().sum())


class OutputError:
    """``Σᵢ ‖f̂(aᵢ) − f(xᵢ)‖²`` over the calibration inputs ``xᵢ``; ``count`` is the number of output values."""

    #: the calibration inputs
    inputs: list[torch.Tensor]
    count: int

    def batch(self, i: int, a: torch.Tensor) -> float:
        """The squared error of input ``i`` quantized as ``a`` (same shape as ``inputs[i]``)."""
        raise NotImplementedError

    def batch_error(self, i: int, e: torch.Tensor) -> float:
        """The squared error of input ``i`` quantized as ``inputs[i] + e``."""
        return self.batch(i, self.inputs[i] + e)

    def __call__(self, quantize: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """The mean squared output error when every input ``x`` is replaced by ``quantize(x)``."""
        return sum(self.batch(i, quantize(x)) for i, x in enumerate(self.inputs)) / self.count

    def of_input_error(self, input_error: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """The same, given ``input_error(x) = quantize(x) - x`` (fewer passes where the error is what is used)."""
        return sum(self.batch_error(i, input_error(x)) for i, x in enumerate(self.inputs)) / self.count


class LayerFnError(OutputError):
    """From the layer as functions: ``layer_q`` (quantized weight) and the float outputs ``targets``.

    Args:
        inputs: calibration inputs.
        layer_q: the layer with its quantized weight, as a function of its input.
        targets: the float layer's outputs on ``inputs`` (default: ``layer_q(x)``).
    """

    def __init__(self, inputs: Sequence[torch.Tensor], layer_q: Callable[[torch.Tensor], torch.Tensor],
                 targets: Sequence[torch.Tensor] | None = None):
        self.inputs = list(inputs)
        self.layer_q = layer_q
        self.targets = [layer_q(x) for x in self.inputs] if targets is None else list(targets)
        if len(self.targets) != len(self.inputs):
            raise QuantizerError(f'{len(self.targets)} targets for {len(self.inputs)} inputs')
        self.count = sum(t.numel() for t in self.targets)

    def batch(self, i, a):
        return _sum_squares(self.layer_q(a) - self.targets[i])


class LinearOutputError(OutputError):
    """For a linear layer ``y = x·Wᵀ + b`` with quantized weight ``Ŵ`` (the bias cancels).

    With ``e = a − x`` and ``c = x·(Ŵ − W)ᵀ`` (fixed), the error is ``‖e·Ŵᵀ + c‖²``. Where the layer does not narrow
    (``in ≤ out``) it is computed as ``⟨eᵀe, ŴᵀŴ⟩ + 2⟨e, c·Ŵ⟩ + ‖c‖²``: one ``in × in`` product per candidate
    instead of the ``in × out`` output (4x fewer multiply-adds for an MLP's first layer, 3x for qkv), the
    fixed parts computed once. Elsewhere the output difference ``a·Ŵᵀ − x·Wᵀ`` is formed in one ``addmm``.
    Products and row sums in float32, the sum over rows in float64 (tests: relative difference to a float64
    reference below 1e-6).

    Args:
        inputs: calibration inputs ``[..., in]``.
        weight: the float weight ``[out, in]``.
        weight_q: the quantized weight.
    """

    def __init__(self, inputs: Sequence[torch.Tensor], weight: torch.Tensor, weight_q: torch.Tensor):
        if weight.dim() != 2 or weight_q.shape != weight.shape:
            raise QuantizerError(f'weight {tuple(weight.shape)} / weight_q {tuple(weight_q.shape)} are invalid: '
                                 'allowed values are two [out, in] matrices of one shape')
        out_f, in_f = weight.shape
        self.inputs = [x.reshape(-1, in_f).float() for x in inputs]
        self.wq = weight_q.detach().float()
        w = weight.detach().float()
        self.count = sum(x.shape[0] for x in self.inputs) * out_f
        self.gram = in_f <= out_f
        # c = x·(Ŵ − W)ᵀ, the output error of the clean input
        if self.gram:
            self.wq_gram = self.wq.t() @ self.wq
            self.cross, self.fixed = [], []
            for x in self.inputs:
                c = x @ (self.wq - w).t()
                self.cross.append(c @ self.wq)
                self.fixed.append(_sum_squares(c))
        else:
            self.weight_error = [x @ (self.wq - w).t() for x in self.inputs]

    def batch(self, i, a):
        return self.batch_error(i, a.reshape(-1, self.wq.shape[1]).float() - self.inputs[i])

    def batch_error(self, i, e):
        e = e.reshape(-1, self.wq.shape[1]).float()
        if self.gram:
            return float((e.t() @ e).mul_(self.wq_gram).sum(-1).double().sum()) + \
                2 * _sum_products(e, self.cross[i]) + self.fixed[i]
        return _sum_squares(torch.addmm(self.weight_error[i], e, self.wq.t()))
