"""Driving calibration passes: observe, end each pass, repeat while a quantizer's search needs it, freeze."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .base import Quantizer
from .errors import QuantizerError


def run_calibration_passes(quantizers: Iterable[Quantizer], run_once: Callable[[], int]) -> tuple[int, int]:
    """Calibrate ``quantizers`` on what ``run_once`` feeds them, as many passes as their searches need.

    Every quantizer is reset and observes the first pass. After each pass, a quantizer that needs no more data
    is frozen and, while the others observe further passes, disabled (it returns its input, so the data the
    others see stay the float values); at the end every quantizer's ``enabled`` flag is restored.

    Args:
        quantizers: the quantizers to calibrate.
        run_once: one pass over the calibration data (e.g. the model on every calibration batch); returns the
            number of batches it ran, which must be the same in every pass.

    Returns:
        (batches of one pass, passes run). With 0 batches nothing is frozen and (0, 1) is returned.
    """
    qs = list(quantizers)
    enabled = [q.enabled for q in qs]
    for q in qs:
        q.reset()
        q.observing = True
    active, passes, first = qs, 0, None
    try:
        while active:
            n = run_once()
            passes += 1
            if first is None:
                first = n
                if n == 0:
                    return 0, passes
            elif n != first:
                raise QuantizerError(f'calibration pass {passes} ran {n} batches and the first one {first}: every '
                                     'pass must run the same calibration data')
            still = []
            for q in active:
                if q.end_pass():
                    still.append(q)
                    continue
                q.freeze()
                q.enabled = False
            active = still
    finally:
        for q, e in zip(qs, enabled):
            q.observing = False
            q.enabled = e
    return first, passes


def calibrate(quantizer: Quantizer, *tensors: torch.Tensor) -> Quantizer:
    """Calibrate one quantizer on ``tensors`` (all of them, every pass it needs) and freeze it; returns it."""
    def run_once():
        for x in tensors:
            quantizer(x)
        return len(tensors)

    if run_calibration_passes([quantizer], run_once)[0] == 0:
        raise QuantizerError(f'{quantizer.where}: calibrate() needs at least one tensor')
    return quantizer
