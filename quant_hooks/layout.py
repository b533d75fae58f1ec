"""Tensor layouts of quantization slots, and granularities resolved by meaning against them.

An adapter declares, for every slot of a site, which axis of the tensor holds channels, which holds tokens and
which holds attention heads. A method asks for a granularity by meaning (``per_token``, ``per_channel``,
``per_head`` ...) and :func:`resolve_granularity` turns it into the concrete axes of that slot, so one method
config fits token inputs ``[B, N, C]``, NCHW conv inputs, ``[B, heads, N, d]`` matmul operands and the transposed
key ``kᵀ`` alike. A meaning that does not fit a slot (per-token on a weight, per-head on a linear input) fails with
a message naming the site.
"""
from __future__ import annotations

from dataclasses import dataclass

from .quantizers import Granularity, PerChannel, PerHead, PerTensor, PerToken, QuantizerError


@dataclass(frozen=True)
class Layout:
    """Axes of one slot's tensor (negative indices, so leading batch dimensions may vary; ``None``: absent).

    Args:
        name: a short description for messages, e.g. ``'tokens [..., N, C]'``.
        channel_axis: the axis holding channels (features); weights: the output channel.
        token_axis: the axis holding tokens (one axis; ``None`` where tokens span several axes, as in NCHW).
        head_axis: the axis holding attention heads.
        spatial_tokens: the tokens are the positions of the axes after the channel axis (NCHW pixels): dynamic
            per-token quantization works (one row across the channels per pixel), static per-position does not.
    """

    name: str
    channel_axis: int | None = None
    token_axis: int | None = None
    head_axis: int | None = None
    spatial_tokens: bool = False


#: ``[..., N, C]``: linear-layer inputs (tokens, RoI features)
TOKENS = Layout('tokens [..., N, C]', channel_axis=-1, token_axis=-2)
#: ``[B, C, H, W]``: conv inputs; a "token" is a pixel (one row across the channel axis)
NCHW = Layout('NCHW [B, C, H, W]', channel_axis=-3, spatial_tokens=True)
#: weights ``[out, in, ...]``: channel = output channel
WEIGHT = Layout('weight [out, in, ...]', channel_axis=0)
#: ``[B, heads, N, d]``: q, v and attention maps (rows are query tokens, the last axis keys or channels)
HEADS = Layout('heads [B, h, N, d]', channel_axis=-1, token_axis=-2, head_axis=-3)
#: ``[B, heads, d, N]``: the transposed key kᵀ of q@kᵀ
HEADS_T = Layout('heads transposed [B, h, d, N]', channel_axis=-2, token_axis=-1, head_axis=-3)

#: granularity meanings a method may ask for
MEANINGS = ('per_tensor', 'per_channel', 'per_token', 'per_token_static', 'per_head')


def resolve_granularity(spec, layout: Layout | None, where: str) -> Granularity | dict | str:
    """The granularity ``spec`` (a meaning) made concrete for a slot of ``layout``.

    Args:
        spec: a meaning from :data:`MEANINGS` (string or ``dict(type=meaning, **options)``); anything with explicit
            axes (a :class:`~quant_hooks.quantizers.Granularity`, or a dict giving ``axis`` / ``token_axis`` /
            ``channel_axis``) is returned unchanged.
        layout: the slot's layout; ``None`` only allows ``per_tensor``.
        where: the site and slot, for messages.

    Returns:
        A granularity instance (or ``spec`` unchanged).

    Raises:
        QuantizerError: the meaning is unknown or the layout has no axis for it.
    """
    if isinstance(spec, Granularity):
        return spec
    options = {}
    if isinstance(spec, dict):
        options = dict(spec)
        meaning = options.pop('type', None)
        if {'axis', 'token_axis', 'channel_axis'} & set(options):
            return spec
    else:
        meaning = spec
    if meaning not in MEANINGS:
        raise QuantizerError(f'{where}: granularity={spec!r} is invalid: allowed values are {list(MEANINGS)}')
    if meaning == 'per_tensor':
        return PerTensor()

    def axis(attr: str) -> int:
        value = None if layout is None else getattr(layout, attr)
        if value is None:
            raise QuantizerError(f'{where}: granularity {meaning!r} does not fit this slot: its layout '
                                 f'{layout.name if layout else "(undeclared)"} has no {attr.replace("_axis", "")} '
                                 'axis')
        return value

    if meaning == 'per_channel':
        return PerChannel(axis=axis('channel_axis'))
    if meaning == 'per_head':
        return PerHead(axis=axis('head_axis'))
    dynamic = meaning == 'per_token' and options.pop('dynamic', True)
    channel = axis('channel_axis')
    if dynamic and layout.token_axis is None and layout.spatial_tokens:
        return PerToken(dynamic_=True, channel_axis=channel)  # rows across the channel axis, one per position
    return PerToken(dynamic_=dynamic, token_axis=axis('token_axis'), channel_axis=channel)


#: slot layouts of the two attention products
QK_LAYOUTS = {'a': HEADS, 'b': HEADS_T}  # q @ kᵀ
AV_LAYOUTS = {'a': HEADS, 'b': HEADS}  # probabilities @ v
