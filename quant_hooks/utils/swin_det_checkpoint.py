"""Converting the official Swin detection checkpoints (Swin-Transformer-Object-Detection, mmdet 2.x) to mmdet 3.x.

The official checkpoints name the backbone as the original Swin code does (``backbone.layers.N.blocks.M.attn.qkv``,
``mlp.fc1``, ``patch_embed.proj``, ``layers.N.downsample.reduction``); mmdet 3.x's ``SwinTransformer`` names them
``stages.N.blocks.M.attn.w_msa.qkv``, ``ffn.layers.0.0``, ``patch_embed.projection``, ``stages.N.downsample.reduction``.
Patch merging also orders its 4C input channels differently: the original concatenates the four 2x2 neighbours
as blocks ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (row, column offsets) of C channels each, while mmdet's ``nn.Unfold``
interleaves them per channel, ``c * 4 + kh * 2 + kw``; the reduction weight's input columns and the merge norm's
parameters are permuted accordingly. The neck, RPN and RoI heads (FPN, RPNHead, Shared2FC / ConvFC bbox heads,
FCNMaskHead, CascadeRoIHead) have the same parameter names in mmdet 2.x and 3.x (mmdet 3.x's own model zoo serves
the 2.x checkpoints of these detectors), so their keys pass unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

#: original Swin backbone key (after ``backbone.``) -> mmdet 3.x key
_RENAMES = (
    (re.compile(r'^patch_embed\.proj\.(weight|bias)$'), r'patch_embed.projection.\1'),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.(.+)$'), r'stages.\1.blocks.\2.attn.w_msa.\3'),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$'), r'stages.\1.blocks.\2.ffn.layers.0.0.\3'),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$'), r'stages.\1.blocks.\2.ffn.layers.1.\3'),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$'), r'stages.\1.blocks.\2.\3.\4'),
    (re.compile(r'^layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$'), r'stages.\1.downsample.\2.\3'),
)
_MERGE_REDUCTION = re.compile(r'^layers\.\d+\.downsample\.reduction\.weight$')
_MERGE_NORM = re.compile(r'^layers\.\d+\.downsample\.norm\.(weight|bias)$')
#: mmdet's unfold position j = kh * 2 + kw takes the original neighbour block UNFOLD_TO_BLOCK[j]
UNFOLD_TO_BLOCK = (0, 2, 1, 3)


def merge_reduction_to_mmdet(weight: torch.Tensor) -> torch.Tensor:
    """Reorder the input columns of a patch-merging reduction weight ``(C_out, 4C)`` from the original layout
    (block-major) to mmdet's (channel-major, unfold order)."""
    out_ch, in_ch = weight.shape
    if in_ch % 4:
        raise ValueError(f'patch-merging reduction weight has {in_ch} input channels: expected a multiple of 4')
    blocks = weight.reshape(out_ch, 4, in_ch // 4)[:, list(UNFOLD_TO_BLOCK), :]
    return blocks.transpose(1, 2).reshape(out_ch, in_ch).contiguous()


def merge_norm_to_mmdet(param: torch.Tensor) -> torch.Tensor:
    """Reorder a patch-merging LayerNorm weight or bias ``(4C,)`` from the original layout to mmdet's."""
    (n, ) = param.shape
    if n % 4:
        raise ValueError(f'patch-merging norm has {n} channels: expected a multiple of 4')
    return param.reshape(4, n // 4)[list(UNFOLD_TO_BLOCK), :].transpose(0, 1).reshape(n).contiguous()


def convert_backbone_key(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor, bool]:
    """One backbone entry (name without ``backbone.``): (new name, new value, whether a rule applied)."""
    for pattern, target in _RENAMES:
        if pattern.match(key):
            new_key = pattern.sub(target, key)
            if _MERGE_REDUCTION.match(key):
                value = merge_reduction_to_mmdet(value)
            elif _MERGE_NORM.match(key):
                value = merge_norm_to_mmdet(value)
            return new_key, value, True
    return key, value, False


def convert_swin_det_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Rename (and reorder) the backbone entries of an official Swin detection state dict for mmdet 3.x.

    Keys outside ``backbone.`` and backbone keys no rule matches (already mmdet 3.x names, or names the
    converter does not know) pass unchanged, so a later comparison with the model reports them.

    Returns:
        The converted state dict and the number of entries a rule renamed.
    """
    out, renamed = {}, 0
    for key, value in state.items():
        if key.startswith('backbone.'):
            new_key, value, hit = convert_backbone_key(key[len('backbone.'):], value)
            key = f'backbone.{new_key}'
            renamed += hit
        if key in out:
            raise ValueError(f'two checkpoint entries convert to the same key {key!r}: the checkpoint mixes the '
                             'original Swin and the mmdet 3.x layouts')
        out[key] = value
    return out, renamed


@dataclass
class MatchReport:
    """How a converted state dict matches a model's: every key that does not.

    Attributes:
        missing: keys of the model absent from the checkpoint.
        unexpected: keys of the checkpoint absent from the model.
        shape_mismatch: key -> (checkpoint shape, model shape).
        value_mismatch: fixed (computed, not learned) buffers whose stored values differ from the model's.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)
    value_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch or self.value_mismatch)

    def bad_keys(self) -> set[str]:
        """Every key that does not match."""
        return set(self.missing) | set(self.unexpected) | set(self.shape_mismatch) | set(self.value_mismatch)

    def lines(self) -> list[str]:
        """The report, one line per problem key, under a count per kind of problem."""
        shapes = [f'{k}: checkpoint {c} vs model {m}' for k, (c, m) in sorted(self.shape_mismatch.items())]
        out = []
        for title, items in (('missing keys (in the model, not in the checkpoint)', self.missing),
                             ('unexpected keys (in the checkpoint, not in the model)', self.unexpected),
                             ('shape mismatches', shapes),
                             ("fixed buffers whose values differ from the model's", self.value_mismatch)):
            if items:
                out.append(f'{len(items)} {title}:')
                out += [f'  {item}' for item in items]
        return out


#: buffers the model computes from its configuration (not learned): a checkpoint must hold the same values
FIXED_BUFFER_SUFFIXES = ('relative_position_index', )


def match_state_dict(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> MatchReport:
    """Compare a state dict with a model's ``state_dict()``: names, shapes, and the values of fixed buffers."""
    report = MatchReport(missing=sorted(set(own) - set(state)), unexpected=sorted(set(state) - set(own)))
    for key in sorted(set(own) & set(state)):
        if tuple(state[key].shape) != tuple(own[key].shape):
            report.shape_mismatch[key] = (tuple(state[key].shape), tuple(own[key].shape))
        elif key.endswith(FIXED_BUFFER_SUFFIXES) and not torch.equal(state[key].to(own[key].dtype), own[key]):
            report.value_mismatch.append(key)
    return report
