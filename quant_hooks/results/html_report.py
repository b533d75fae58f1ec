"""A self-contained HTML leaderboard: sortable tables (a little inline JavaScript) and the plots embedded."""
from __future__ import annotations

import base64
import html
import os.path as osp

from .leaderboard import Row, table_rows

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
td:nth-child(-n+4), th:nth-child(-n+4) { text-align: left; }
tr.float td { font-style: italic; background: #fafafa; }
figure { display: inline-block; margin: 0 1em 1em 0; }
"""

_SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), col = th.cellIndex, body = table.tBodies[0];
  const asc = th.dataset.order !== 'asc';
  table.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = asc ? 'asc' : 'desc';
  const key = td => { const v = parseFloat(td.dataset.value ?? td.textContent); return isNaN(v) ? td.textContent : v; };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    const c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}
"""


def _cell(text: str) -> str:
    # the sort key of "12.3 ± 0.4" / "+1.2" is its first number
    first = text.split(' ')[0].replace('+', '')
    try:
        value = f' data-value="{float(first)!r}"'
    except ValueError:
        value = ''
    return f'<td{value}>{html.escape(text)}</td>'


def _image(path: str) -> str:
    ext = osp.splitext(path)[1].lower()
    with open(path, 'rb') as f:
        data = f.read()
    if ext == '.svg':
        mime = 'image/svg+xml'
    elif ext == '.png':
        mime = 'image/png'
    else:
        raise ValueError(f'plot {path!r}: only .png and .svg can be embedded')
    name = html.escape(osp.basename(path))
    return (f'<figure><img alt="{name}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'
            f'<figcaption>{name}</figcaption></figure>')


def html_page(rows: list[Row], plots: list[str] = (), title: str = 'Leaderboard', subtitle: str = '') -> str:
    """The page as a string: one sortable table per task (click a header to sort), then the plots."""
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">', f'<title>{html.escape(title)}</title>',
             f'<style>{_STYLE}</style>', f'<script>{_SCRIPT}</script>', '</head><body>',
             f'<h1>{html.escape(title)}</h1>']
    if subtitle:
        parts.append(f'<p>{html.escape(subtitle)}</p>')
    for task in sorted({r.task for r in rows}):
        header, lines = table_rows(rows, task)
        parts.append(f'<h2>{html.escape(task)}</h2>')
        parts.append(f'<table id="table-{html.escape(task)}"><thead><tr>'
                     + ''.join(f'<th onclick="sortTable(this)">{html.escape(h)}</th>' for h in header)
                     + '</tr></thead><tbody>')
        for cells in lines:
            cls = ' class="float"' if cells[1] == 'float' else ''
            parts.append(f'<tr{cls}>' + ''.join(_cell(c) for c in cells) + '</tr>')
        parts.append('</tbody></table>')
    if not rows:
        parts.append('<p>(no records match)</p>')
    if plots:
        parts.append('<h2>plots</h2>')
        parts += [_image(p) for p in plots]
    parts.append('</body></html>')
    return '\n'.join(parts) + '\n'
