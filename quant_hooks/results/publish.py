"""Write a leaderboard: Markdown, CSV, the HTML page and the plots, from records."""
from __future__ import annotations

import os
import os.path as osp

from .html_report import html_page
from .leaderboard import aggregate, to_csv, to_markdown
from .plots import bit_plots


def write_leaderboard(records: list[dict], out_dir: str, title: str = 'Leaderboard', subtitle: str = '',
                      plots: bool = True) -> dict[str, object]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.html`` and ``plots/*.png|svg`` into
    ``out_dir``; returns their paths (``plots``: the list of plot files)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = aggregate(records)
    paths: dict[str, object] = dict(markdown=osp.join(out_dir, 'leaderboard.md'),
                                    csv=osp.join(out_dir, 'leaderboard.csv'),
                                    html=osp.join(out_dir, 'leaderboard.html'), plots=[])
    with open(paths['markdown'], 'w') as f:
        f.write(to_markdown(rows, title))
    with open(paths['csv'], 'w', newline='') as f:
        f.write(to_csv(rows))
    if plots and rows:
        paths['plots'] = bit_plots(rows, osp.join(out_dir, 'plots'))
    embedded = [p for p in paths['plots'] if p.endswith('.png')]
    with open(paths['html'], 'w') as f:
        f.write(html_page(rows, embedded, title, subtitle))
    return paths
