"""A store of unit inputs and targets held in memory up to a byte budget, spilling the rest to disk."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import torch


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside (tuples, lists and dicts are walked)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(map_tensors(o, fn) for o in obj)
    if isinstance(obj, list):
        return [map_tensors(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def tensors_of(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside ``obj``, in a fixed order."""
    found: list[torch.Tensor] = []
    map_tensors(obj, found.append)
    return found


def nbytes(obj: Any) -> int:
    """Bytes held by the tensors inside ``obj``."""
    return sum(t.numel() * t.element_size() for t in tensors_of(obj))


class RecordCache:
    """Key -> record (any nesting of tuples / lists / dicts of tensors and plain values).

    Records are kept in memory while the bytes held stay within ``budget_bytes``; a record that does not fit is
    written to a temporary directory with ``torch.save`` and read back with ``torch.load(weights_only=True)`` on
    every access. ``peak_bytes`` is the most memory the cache held at any time (it never exceeds the budget).

    Args:
        budget_bytes: memory budget in bytes (0: everything goes to disk).
        spill_dir: parent directory of the temporary spill directory (default: the system temp dir).
    """

    def __init__(self, budget_bytes: int, spill_dir: str | None = None):
        if budget_bytes < 0:
            raise ValueError(f'cache budget_bytes={budget_bytes} is invalid: allowed values are >= 0')
        self.budget_bytes = int(budget_bytes)
        self.spill_dir = spill_dir
        self._mem: dict[Any, Any] = {}
        self._disk: dict[Any, str] = {}
        self._dir: str | None = None
        self.bytes = 0
        self.peak_bytes = 0
        self.spilled_bytes = 0
        self.spilled_records = 0

    def __len__(self) -> int:
        return len(self._mem) + len(self._disk)

    def __contains__(self, key) -> bool:
        return key in self._mem or key in self._disk

    @property
    def num_spilled(self) -> int:
        """Records on disk now (``spilled_records`` and ``spilled_bytes`` count every spill so far)."""
        return len(self._disk)

    def put(self, key, record, copy: bool = True) -> None:
        """Store ``record``; with ``copy`` its tensors are detached and copied first (so later in-place changes
        do not reach it)."""
        if key in self:
            raise KeyError(f'cache key {key!r} is already stored')
        if copy:
            record = map_tensors(record, lambda t: t.detach().clone())
        size = nbytes(record)
        if self.bytes + size <= self.budget_bytes:
            self._mem[key] = record
            self.bytes += size
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            return
        if self._dir is None:
            if self.spill_dir:
                os.makedirs(self.spill_dir, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix='vitq_recon_', dir=self.spill_dir)
        path = os.path.join(self._dir, f'{len(self._disk)}.pt')
        torch.save(record, path)
        self._disk[key] = path
        self.spilled_bytes += size
        self.spilled_records += 1

    def get(self, key):
        if key in self._mem:
            return self._mem[key]
        if key not in self._disk:
            raise KeyError(f'cache key {key!r} is not stored')
        return torch.load(self._disk[key], weights_only=True)

    def drop(self, tag) -> None:
        """Forget the records whose key starts with ``tag`` (keys are tuples ``(tag, ...)``)."""
        for key in [k for k in self._mem if k[0] == tag]:
            self.bytes -= nbytes(self._mem.pop(key))
        for key in [k for k in self._disk if k[0] == tag]:
            os.remove(self._disk.pop(key))

    def clear(self) -> None:
        """Drop every record and delete the spill directory."""
        self._mem.clear()
        self._disk.clear()
        self.bytes = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self):
        if getattr(self, '_dir', None) is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
