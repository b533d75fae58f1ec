"""The quantizer interface.

Life cycle of a :class:`Quantizer`:

1. *observe*: with ``observing`` on, ``forward(x)`` records statistics of ``x`` and returns ``x`` unchanged;
   a quantizer whose search scores candidates on every value needs the same calibration data more than once:
   call ``end_pass()`` after each pass over the data; it returns True while another pass is needed
   (``calibration_passes`` says how many are planned; :func:`~.calibrate.run_calibration_passes` drives it);
2. *freeze*: ``freeze()`` turns the statistics into parameters (scales, zero-points, ...) stored as buffers,
   so a calibrated state saves and reloads with ``state_dict``;
3. *quantize*: ``forward(x)`` returns the fake-quantized ``x``; with ``enabled`` off it returns ``x``.

Subclasses implement ``_observe`` (may be a no-op for dynamic quantizers), ``_compute_params`` and
``fake_quant``. Buffers whose shape is only known after calibration are created empty; loading a state dict
resizes them.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import EmptyCalibrationError, QuantizerError, check_bits, check_finite
from .granularity import Granularity, parse_granularity


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` with a straight-through gradient."""
    return (x.round() - x).detach() + x


class Quantizer(nn.Module):
    """Base class of all fake quantizers.

    Args:
        bits: bit width, an integer in [2, 16].
        granularity: which elements share parameters; see :func:`parse_granularity`.
    """

    registry_name = 'quantizer'
    #: False for quantizers that need no statistics (fully dynamic ones)
    requires_calibration = True

    def __init__(self, bits: int = 8, granularity: Granularity | str | dict = 'per_tensor'):
        super().__init__()
        self.bits = check_bits(bits)
        self.granularity = parse_granularity(granularity)
        self.enabled = True
        self.observing = False
        #: name of the quantization site, set by the model layer that owns the quantizer (for messages)
        self.site = ''
        self.register_buffer('calibrated_', torch.tensor(False))
        self.num_observed = 0
        self._observed_range = None
        #: bumped whenever parameters change, so owners can cache derived tensors (quantized weights)
        self.version = 0
        #: what the calibration search did (set by ``freeze``), see :meth:`describe`
        self.search_info: dict = {}
        self._reset_passes()

    def _reset_passes(self):
        self.passes_done = 0
        self._pass_open = False
        self._needs_pass = False

    # -- life cycle ---------------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return bool(self.calibrated_)

    @property
    def where(self) -> str:
        return f'{type(self).__name__}({self.site or "unnamed site"})'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observe(x)
            return x
        if not self.enabled:
            return x
        if self.requires_calibration and not self.calibrated:
            raise QuantizerError(f'{self.where} is used before calibration: observe data and call freeze() first, '
                                 'or load a calibrated state dict')
        return self.fake_quant(x)

    def observe(self, x: torch.Tensor) -> None:
        """Record statistics of ``x`` (what ``forward`` does while ``observing``); NaN / inf are refused."""
        self._observed_range = check_finite(x, self.where)  # (min, max): searches may reuse it
        with torch.no_grad():
            self._observe(x.detach())
        self.num_observed += 1
        self._pass_open = True

    @property
    def calibration_passes(self) -> int:
        """Passes over the calibration data that the search needs (1: statistics only)."""
        return 1

    def end_pass(self) -> bool:
        """Finish one pass over the calibration data.

        Returns:
            True when the quantizer needs to observe the same calibration data once more (in the same order is
            not required, the same values are), False when it is ready to ``freeze``.
        """
        if self.requires_calibration and self.num_observed == 0:
            raise EmptyCalibrationError(f'{self.where} cannot be calibrated: it observed no data '
                                        '(empty calibration set, or the site is never reached by the model)')
        self._needs_pass = bool(self._end_pass())
        self._pass_open = False
        self.passes_done += 1
        return self._needs_pass

    def freeze(self) -> None:
        """Compute parameters from the observed statistics and drop the statistics."""
        if self.requires_calibration and self.num_observed == 0:
            raise EmptyCalibrationError(f'{self.where} cannot be calibrated: it observed no data '
                                        '(empty calibration set, or the site is never reached by the model)')
        if self._pass_open:
            self.end_pass()
        if self._needs_pass:
            raise QuantizerError(
                f'{self.where} needs {self.calibration_passes} passes over the same calibration data and ran '
                f'{self.passes_done}: call end_pass() after each pass and observe the data again while it returns '
                'True (quant_hooks.quantizers.run_calibration_passes and calibrate do this)')
        self._compute_params()
        self.search_info = self._search_info()
        self._reset_observer()
        self.observing = False
        self.calibrated_.fill_(True)
        self.version += 1

    def reset(self) -> None:
        """Forget statistics and parameters (back to the uncalibrated state)."""
        self._reset_observer()
        self._reset_passes()
        self.num_observed = 0
        self.search_info = {}
        self.calibrated_.fill_(False)
        self.version += 1

    # -- to implement -------------------------------------------------------------------------------------
    def _observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _compute_params(self) -> None:
        raise NotImplementedError

    def _reset_observer(self) -> None:
        pass

    def _end_pass(self) -> bool:
        """End of a pass over the calibration data; True when another pass is needed."""
        return False

    def _search_info(self) -> dict:
        """What the calibration search did (called by ``freeze`` before the statistics are dropped)."""
        return {}

    def describe(self) -> dict:
        """The quantizer's type, bit width, granularity and what its calibration search did."""
        return dict(type=getattr(self, 'registry_name', type(self).__name__), bits=self.bits,
                    granularity=self.granularity.name, **self.search_info)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize and dequantize ``x`` with the frozen (or dynamic) parameters."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------------------
    @property
    def qmax_unsigned(self) -> int:
        return 2**self.bits - 1

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # parameters sized at calibration time are empty in a fresh quantizer: take the stored shape
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        for name, param in list(self._parameters.items()):  # learnable ones too (AdaRound's rounding variables)
            key = prefix + name
            if param is not None and key in state_dict and state_dict[key].shape != param.shape:
                self._parameters[name] = nn.Parameter(torch.empty_like(state_dict[key], device=param.device),
                                                      requires_grad=param.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.version += 1

    def extra_repr(self) -> str:
        return f'bits={self.bits}, granularity={self.granularity}'
