"""Granularity values: which elements share one scale / zero-point.

A granularity is a small frozen dataclass (as in torchao), never a string scattered through code. Axes are
normalised to negative indices on first use so that parameters broadcast against inputs with any number of
leading (batch) dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import QuantizerError


@dataclass(frozen=True)
class Granularity:
    """Base class. ``grouped(x)`` returns ``x`` viewed as ``[G, S]`` (G groups of S elements)."""

    name = 'granularity'

    def num_groups(self, x: torch.Tensor) -> int:
        raise NotImplementedError

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def param_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Shape of a per-group parameter that broadcasts against ``x``'s trailing dimensions."""
        raise NotImplementedError

    def extrema(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[G]`` minimum and maximum of each group."""
        g = self.grouped(x)
        return g.amin(dim=1), g.amax(dim=1)

    def grouped_columns(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``grouped(x)[:, idx]``: chosen columns of the ``[G, S]`` view."""
        return self.grouped(x).index_select(1, idx)

    @property
    def dynamic(self) -> bool:
        return False


@dataclass(frozen=True)
class PerTensor(Granularity):
    """One scale for the whole tensor."""

    name = 'per_tensor'

    def num_groups(self, x):
        return 1

    def grouped(self, x):
        return x.reshape(1, -1)

    def extrema(self, x):
        """One pass over ``x`` in place (no flattened copy of a non-contiguous tensor)."""
        lo, hi = torch.aminmax(x)
        return lo.reshape(1), hi.reshape(1)

    def param_shape(self, x):
        return ()

    def grouped_columns(self, x, idx):
        """From the flat view of a contiguous ``x``; gathered from ``x`` in place otherwise (no flattened copy)."""
        if x.is_contiguous():
            return x.reshape(1, -1).index_select(1, idx)
        return x[torch.unravel_index(idx, x.shape)].reshape(1, -1)


@dataclass(frozen=True)
class PerChannel(Granularity):
    """One scale per index along ``axis`` (weights: axis=0, the output channel; activations: axis=-1)."""

    axis: int = -1
    name = 'per_channel'

    def _axis(self, x: torch.Tensor) -> int:
        if not -x.dim() <= self.axis < x.dim():
            raise QuantizerError(f'{self.name} axis={self.axis} does not exist in a tensor of shape {tuple(x.shape)}')
        return self.axis % x.dim()

    def num_groups(self, x):
        return x.shape[self._axis(x)]

    def grouped(self, x):
        return x.movedim(self._axis(x), 0).reshape(x.shape[self._axis(x)], -1)

    def grouped_columns(self, x, idx):
        """Gathered from ``x`` in place: a layout that does not flatten to ``[G, S]`` (channel-last tokens of a
        permuted view) is never copied whole."""
        return moved_columns(x, self._axis(x), idx)

    def extrema(self, x):
        """Reduced over the other axes in place: no ``[G, S]`` copy of a layout that does not flatten to one
        (heads split off the channels)."""
        axis = self._axis(x)
        if x.dim() == 1:
            return x, x
        others = tuple(d for d in range(x.dim()) if d != axis)
        return x.amin(dim=others), x.amax(dim=others)

    def param_shape(self, x):
        axis = self._axis(x)
        return (x.shape[axis],) + (1,) * (x.dim() - axis - 1)


@dataclass(frozen=True)
class PerHead(PerChannel):
    """One scale per attention head: per-channel along the head axis of ``[B, heads, N, N]`` maps."""

    axis: int = 1
    name = 'per_head'


@dataclass(frozen=True)
class PerToken(Granularity):
    """One scale per token (row). ``dynamic``: computed from each row at run time (any token count);
    static: one calibrated scale per token *position* along ``token_axis`` (fixed token count).

    ``channel_axis`` is the axis reduced inside one token (the embedding dimension).
    """

    dynamic_: bool = True
    token_axis: int = -2
    channel_axis: int = -1
    name = 'per_token'

    @property
    def dynamic(self) -> bool:
        return self.dynamic_

    def num_groups(self, x):
        return x.shape[self.token_axis]

    def grouped(self, x):
        """Static form: groups are token positions, pooled over the batch and channels."""
        axis = self.token_axis % x.dim()
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)

    def grouped_columns(self, x, idx):
        return moved_columns(x, self.token_axis % x.dim(), idx)

    def param_shape(self, x):
        axis = self.token_axis % x.dim()
        return (x.shape[axis],) + (1,) * (x.dim() - axis - 1)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic form: view ``x`` as ``[..., C]`` rows with the channel axis last (a view when it is last)."""
        return x if self.channel_axis in (-1, x.dim() - 1) else x.movedim(self.channel_axis, -1)


def moved_columns(x: torch.Tensor, axis: int, idx: torch.Tensor) -> torch.Tensor:
    """``x.movedim(axis, 0).reshape(G, -1)[:, idx]`` gathered from ``x`` without the reshape's copy."""
    y = x.movedim(axis, 0)
    if y.dim() == 1:
        return y[:, None].index_select(1, idx)
    return y[(slice(None), *torch.unravel_index(idx, y.shape[1:]))]


_BY_NAME = {'per_tensor': PerTensor, 'per_channel': PerChannel, 'per_head': PerHead, 'per_token': PerToken}


def parse_granularity(spec) -> Granularity:
    """Build a granularity from an instance, a name, or a dict ``dict(type=name, **kwargs)``.

    Names: ``per_tensor``, ``per_channel``, ``per_head``, ``per_token`` (dynamic), ``per_token_static``.
    """
    if isinstance(spec, Granularity):
        return spec
    kwargs = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        spec = kwargs.pop('type', None)
    if spec == 'per_token_static':
        return PerToken(dynamic_=False, **kwargs)
    if spec == 'per_token' and 'dynamic' in kwargs:
        kwargs['dynamic_'] = kwargs.pop('dynamic')
    if spec not in _BY_NAME:
        raise QuantizerError(f'granularity={spec!r} is invalid: allowed values are '
                             f'{sorted(_BY_NAME) + ["per_token_static"]} or a Granularity instance')
    try:
        return _BY_NAME[spec](**kwargs)
    except TypeError as e:
        raise QuantizerError(f'granularity {spec!r}: bad arguments {kwargs}: {e}') from None


def require_granularity(granularity: Granularity, allowed: dict[str, type], where: str,
                        dynamic: bool | None = None) -> Granularity:
    """Raise unless ``granularity`` is an instance of one of ``allowed`` (name -> class).

    Args:
        granularity: the parsed granularity.
        allowed: names (for the message) and the classes they stand for.
        where: the quantizer, for the message.
        dynamic: if given, also require ``granularity.dynamic == dynamic``.
    """
    ok = isinstance(granularity, tuple(allowed.values()))
    if ok and dynamic is not None and granularity.dynamic != dynamic:
        ok = False
    if not ok:
        raise QuantizerError(f'{where}: granularity={granularity.name!r}'
                             f'{" (dynamic)" if granularity.dynamic else ""} is invalid: allowed values are '
                             f'{sorted(allowed)}')
    return granularity
