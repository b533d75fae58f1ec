"""Reconstruction units: the pieces of a model optimised one at a time, found from the sites' ``block`` and tags.

Levels:

* ``module``: each site's ``block`` (an attention module, an MLP, the patch embedding, a head ...);
* ``block``: the transformer block holding an attention and an MLP (the parent of ``site.block`` when every site
  under that parent belongs to one of its direct children, and there are at least two such children); other
  blocks stay module units.

Groups: sites carrying a tag that starts with ``group_tag`` (``bridge_0``, ``bridge_1`` ... from the hybrid
adapters) put their units into one group, reconstructed jointly. A group is the members' common ancestor module,
or, when that ancestor is an ``nn.Sequential``, the contiguous run of its children from the first member to the
last (run one after the other). A unit inside another unit is absorbed by it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from ..sites import QuantSite

UNIT_LEVELS = ('module', 'block')


@dataclass
class ReconUnit:
    """One reconstruction unit.

    Args:
        name: a module name, or ``<sequential>[i:j]`` for a run of a Sequential's children.
        kind: ``module``, ``block`` or ``group``.
        module_names: the modules run in sequence (the first takes the unit input, each next one the previous
            output).
        modules: those modules.
        sites: the quantization sites inside the unit, in network order.
    """

    name: str
    kind: str
    module_names: list[str]
    modules: list[nn.Module]
    sites: list[QuantSite] = field(default_factory=list)

    def forward(self, args: tuple, kwargs: dict):
        out = self.modules[0](*args, **kwargs)
        for m in self.modules[1:]:
            out = m(out)
        return out

    def contains(self, name: str) -> bool:
        """Whether the module ``name`` lies inside (or is) one of the unit's modules."""
        return any(_inside(name, m) for m in self.module_names)


def _inside(name: str, root: str) -> bool:
    return root == '' or name == root or name.startswith(root + '.')


def _parent(name: str) -> str:
    return name.rpartition('.')[0]


def _base_name(site: QuantSite) -> str:
    return site.block or site.name


def _block_parents(sites: Sequence[QuantSite]) -> dict[str, str]:
    """block name -> its transformer-block parent, for the blocks that have one (see the module docstring)."""
    children: dict[str, set[str]] = {}
    for s in sites:
        b = _base_name(s)
        if '.' in b and not b.rpartition('.')[2].isdigit():
            children.setdefault(_parent(b), set()).add(b)
    valid = {}
    for parent, kids in children.items():
        if len(kids) < 2:
            continue
        under = [s for s in sites if _inside(s.name, parent)]
        if all(_parent(_base_name(s)) == parent for s in under):
            for k in kids:
                valid[k] = parent
    return valid


def _common_ancestor(names: Iterable[str]) -> str:
    parts = [n.split('.') for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return '.'.join(common)


def _group_unit(model: nn.Module, members: list[str]) -> tuple[str, list[str]]:
    """(name, module names run in sequence) of the unit that covers all ``members``."""
    anc = _common_ancestor(members)
    if anc in members:
        return anc, [anc]
    root = model.get_submodule(anc) if anc else model
    if isinstance(root, nn.Sequential):
        depth = len(anc.split('.')) if anc else 0
        child_names = [n for n, _ in root.named_children()]
        idx = sorted({child_names.index(m.split('.')[depth]) for m in members})
        lo, hi = idx[0], idx[-1]
        names = [f'{anc}.{c}' if anc else c for c in child_names[lo:hi + 1]]
        return (names[0] if lo == hi else f'{anc}[{lo}:{hi + 1}]'), names
    return anc, [anc]


def _merge_groups(groups: list[set[str]]) -> list[set[str]]:
    """Union of groups that share a member."""
    merged: list[set[str]] = []
    for g in groups:
        g = set(g)
        keep = []
        for m in merged:
            if m & g:
                g |= m
            else:
                keep.append(m)
        merged = keep + [g]
    return merged


def find_units(model: nn.Module, sites: Sequence[QuantSite], level: str = 'module', group_tag: str | None = None,
               names: Sequence[str] | None = None) -> list[ReconUnit]:
    """The reconstruction units of ``model`` in network order (order of their first site).

    Args:
        model: the model holding the sites (site names are module paths in it).
        sites: the quantization sites, in network order.
        level: ``module`` or ``block`` (see the module docstring).
        group_tag: tag prefix that joins units into groups (``'bridge_'``); ``None``: no groups.
        names: explicit unit module names instead of the automatic ones (each gets every site under it; nested
            names are kept, the inner unit first).

    Returns:
        Units with at least one site.
    """
    if level not in UNIT_LEVELS:
        raise ValueError(f'reconstruction unit={level!r} is invalid: allowed values are {list(UNIT_LEVELS)}')
    order = {s.name: i for i, s in enumerate(sites)}
    if names is not None:
        specs = []
        for n in names:
            try:
                model.get_submodule(n)
            except AttributeError:
                raise ValueError(f'reconstruction units: {n!r} is not a module of {type(model).__name__}; allowed '
                                 f'values are module names such as {sorted({_base_name(s) for s in sites})[:5]}') \
                    from None
            specs.append((n, 'module', [n]))
    else:
        parents = _block_parents(sites) if level == 'block' else {}
        base = {s.name: parents.get(_base_name(s), _base_name(s)) for s in sites}
        kinds = {b: ('block' if b in parents.values() else 'module') for b in base.values()}
        specs = [(b, kinds[b], [b]) for b in dict.fromkeys(base.values())]
        if group_tag:
            tagged: dict[str, set[str]] = {}
            for s in sites:
                for t in s.tags:
                    if t.startswith(group_tag):
                        tagged.setdefault(t, set()).add(base[s.name])
            for members in _merge_groups([g for g in tagged.values() if len(g) > 1]):
                name, mods = _group_unit(model, sorted(members))
                specs.append((name, 'group', mods))
    unique: dict[tuple[str, ...], tuple[str, str]] = {}
    for n, k, mods in specs:  # a group may coincide with a unit (or another group): keep one, as a group
        if tuple(mods) not in unique or k == 'group':
            unique[tuple(mods)] = (n, k)
    units = [ReconUnit(n, k, list(mods), [model.get_submodule(m) for m in mods]) for mods, (n, k) in unique.items()]
    if names is not None:  # as given: a unit inside another one is reconstructed first, then again within it
        for u in units:
            u.sites = [s for s in sites if u.contains(s.name)]
        units = [u for u in units if u.sites]
        units.sort(key=lambda u: (order[u.sites[0].name], len(u.sites)))
        return units
    outer = [u for u in units if not any(v is not u and set(v.module_names) != set(u.module_names)
                                         and all(v.contains(m) for m in u.module_names) for v in units)]
    for s in sites:
        for u in outer:
            if u.contains(s.name):
                u.sites.append(s)
                break
    outer = [u for u in outer if u.sites]
    outer.sort(key=lambda u: order[u.sites[0].name])
    return outer
