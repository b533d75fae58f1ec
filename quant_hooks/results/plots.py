"""Metric versus bit width per method (matplotlib, PNG and SVG)."""
from __future__ import annotations

import os
import os.path as osp

from .leaderboard import Row, float_rows
from .metrics import METRICS, TASK_METRICS, MetricSpec


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    matplotlib.rcParams['svg.hashsalt'] = 'vitq-bench'  # identical SVG for identical data
    import matplotlib.pyplot as plt
    return plt


def bit_plots(rows: list[Row], out_dir: str, formats: tuple[str, ...] = ('png', 'svg')) -> list[str]:
    """One figure per (task, model, scope, metric): the metric (mean ± std over seeds) against W/A bits, a line
    per method, the float value dashed. Returns the written files."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    floats = float_rows(rows)
    written = []
    groups = sorted({(r.task, r.model, r.scope) for r in rows})
    for task, model, scope in groups:
        mine = [r for r in rows if (r.task, r.model, r.scope) == (task, model, scope)]
        names = [n for n in TASK_METRICS.get(task, ()) if any(n in r.quant for r in mine)]
        names = names or sorted({n for r in mine for n in r.quant})
        bits = sorted({(r.w_bits, r.a_bits) for r in mine}, key=lambda b: (b[0], b[1]))
        xs = {b: i for i, b in enumerate(bits)}
        for name in names:
            spec = METRICS.get(name) or MetricSpec(name, name, name)
            fig, ax = plt.subplots(figsize=(5.0, 3.5))
            for method in sorted({r.method for r in mine}):
                pts = sorted((xs[(r.w_bits, r.a_bits)], r.quant[name]) for r in mine
                             if r.method == method and name in r.quant)
                if not pts:
                    continue
                ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[p[1].std or 0.0 for p in pts],
                            marker='o', capsize=3, label=method)
            ref = floats.get((task, model, scope), {}).get(name)
            if ref is not None:
                ax.axhline(ref, color='black', linestyle='--', linewidth=1, label='float')
            ax.set_xticks(range(len(bits)))
            ax.set_xticklabels([f'W{w}/A{a}' for w, a in bits])
            ax.set_xlabel('bit width')
            ax.set_ylabel(spec.label)
            ax.set_title(f'{model} ({scope}): {spec.label}', fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            stem = osp.join(out_dir, _safe(f'{task}_{model}_{scope}_{name}'))
            for fmt in formats:
                path = f'{stem}.{fmt}'
                fig.savefig(path, format=fmt, metadata={'Date': None} if fmt == 'svg' else None)
                written.append(path)
            plt.close(fig)
    return written


def bar_plot(labels: list[str], values: list[float], path: str, xlabel: str, title: str) -> str:
    """A horizontal bar chart (largest first at the top), e.g. metric lost per quantized unit."""
    plt = _pyplot()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, color='tab:red')
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    fmt = osp.splitext(path)[1].lstrip('.') or 'png'
    fig.savefig(path, format=fmt, metadata={'Date': None} if fmt == 'svg' else None)
    plt.close(fig)
    return path


def _safe(text: str) -> str:
    import re
    return re.sub(r'[^A-Za-z0-9_.-]+', '-', text).strip('-')
