"""Leaderboard of a fixture store: exact Markdown / CSV, HTML page with every row, plots, filters."""
from __future__ import annotations

import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_records import fake_record, leaderboard_fixture
from tiny_runs import load_tool

from quant_hooks.results import ResultStore
from quant_hooks.results.leaderboard import aggregate, parse_bits, table_rows, to_csv, to_markdown

DATA = Path(__file__).parent / 'data'


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / 'fixture.sqlite'
    with ResultStore(path) as store:
        store.append(leaderboard_fixture())
    return path


class TableParser(HTMLParser):
    """Collects the text of every table row."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.images = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag == 'tr':
            self.rows.append([])
        elif tag in ('td', 'th'):
            self.cell = ''
        elif tag == 'img' and dict(attrs).get('src', '').startswith('data:image/png;base64,'):
            self.images += 1

    def handle_endtag(self, tag):
        if tag in ('td', 'th'):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_aggregate_against_plain_statistics():
    rows = {r.key: r for r in aggregate(leaderboard_fixture())}
    row = rows[('detection', 'swin_t', 'MinMax', 4, 4, 'backbone')]
    box = [0.105 * 100, 0.111 * 100]  # the rerun of seed 0 replaces its first run
    assert row.seeds == [0, 1] and row.quant['box_ap'].values == pytest.approx(box)
    assert row.quant['box_ap'].mean == pytest.approx(statistics.mean(box))
    assert row.quant['box_ap'].std == pytest.approx(statistics.stdev(box))
    assert row.delta('box_ap') == pytest.approx(statistics.mean(box) - 43.5)
    single = rows[('detection', 'swin_t', 'Percentile', 8, 8, 'backbone')]
    assert single.quant['mask_ap'].std is None


def test_markdown_and_csv_equal_expected():
    rows = aggregate(leaderboard_fixture())
    assert to_markdown(rows, 'Fixture leaderboard') == (DATA / 'leaderboard_fixture.md').read_text()
    assert to_csv(rows) == (DATA / 'leaderboard_fixture.csv').read_text()


def test_tool_writes_tables_html_and_plots(store_path, tmp_path, capsys):
    out = tmp_path / 'board'
    paths = load_tool('leaderboard').main([str(store_path), '--out-dir', str(out), '--title', 'Fixture leaderboard'])
    assert Path(paths['markdown']).read_text() == (DATA / 'leaderboard_fixture.md').read_text()
    assert Path(paths['csv']).read_text() == (DATA / 'leaderboard_fixture.csv').read_text()
    # plots: detection swin_t and swin_s (box, mask), classification deit_s (top-1); PNG and SVG each
    assert len(paths['plots']) == 10
    for p in paths['plots']:
        data = Path(p).read_bytes()
        assert data.startswith(b'\x89PNG') if p.endswith('.png') else b'<svg' in data[:2000]
    parser = TableParser()
    parser.feed(Path(paths['html']).read_text())
    parser.close()
    rows = aggregate(leaderboard_fixture())
    expected = [cells for task in ('classification', 'detection') for cells in table_rows(rows, task)[1]]
    body = [r for r in parser.rows if r and r[0] != 'model']
    assert body == expected and len(body) == 9
    assert parser.images == 5
    assert 'Fixture leaderboard' in capsys.readouterr().out


@pytest.mark.parametrize('args,expected_keys', [
    (['--model', 'swin_s'], {('swin_s', 'MinMax', 6)}),
    (['--task', 'classification'], {('deit_s', 'OMSE', 4)}),
    (['--method', 'Percentile'], {('swin_t', 'Percentile', 8), ('swin_t', 'Percentile', 4)}),
    (['--bits', 'W4A8'], {('deit_s', 'OMSE', 4)}),
    (['--bits', '6', '8', '--model', 'swin_t'], {('swin_t', 'MinMax', 8), ('swin_t', 'Percentile', 8)}),
    (['--commit', 'bbbb'], {('swin_s', 'MinMax', 6)}),
    (['--since', '2026-02-09', '--until', '2026-02-28'], {('swin_s', 'MinMax', 6)}),
])
def test_filters(store_path, tmp_path, args, expected_keys):
    paths = load_tool('leaderboard').main([str(store_path), '--out-dir', str(tmp_path / 'f'), '--no-plots', *args])
    lines = Path(paths['csv']).read_text().splitlines()[1:]
    assert {(c[1], c[2], int(c[3])) for c in (line.split(',') for line in lines)} == expected_keys
    assert paths['plots'] == []


def test_parse_bits():
    assert [parse_bits(b) for b in ('4', 'W4A8', 'w6/a6', '8/4')] == [(4, 4), (4, 8), (6, 6), (8, 4)]
    with pytest.raises(ValueError, match="bits 'x4' are invalid"):
        parse_bits('x4')


def test_leaderboard_of_a_jsonl_export(store_path, tmp_path):
    with ResultStore(store_path) as store:
        store.export_jsonl(tmp_path / 'all.jsonl')
    paths = load_tool('leaderboard').main([str(tmp_path / 'all.jsonl'), '--out-dir', str(tmp_path / 'j'),
                                           '--no-plots'])
    assert Path(paths['csv']).read_text() == (DATA / 'leaderboard_fixture.csv').read_text()


def test_no_change_column_without_float_values():
    records = [fake_record(model='vit', task='fidelity', seed=s, quant={'feature/sqnr_db': 20.0 + s,
                                                                        'feature/cosine_mean': 0.99},
                           float_={'feature/knn_top1': 50.0}) for s in range(2)]
    header, lines = table_rows(aggregate(records), 'fidelity')
    assert header == ['model', 'method', 'W/A', 'scope', 'seeds', 'SQNR dB', 'cosine', '1-NN top-1', 'Δ 1-NN top-1']
    assert lines[1] == ['vit', 'MinMax', 'W8/A8', 'backbone', '2', '20.50 ± 0.71', '0.9900 ± 0.0000', '-', '-']


def test_sampled_runs_are_labelled_and_grouped_apart_from_exact_ones():
    exact = [fake_record(method='QHyViT', w_bits=4, a_bits=4, seed=s,
                         quant={'coco/bbox_mAP': 0.30 + s / 100, 'coco/segm_mAP': 0.3}) for s in (0, 1)]
    sampled = fake_record(method='QHyViT', w_bits=4, a_bits=4, seed=0, created_at='2026-02-01T00:00:00+00:00',
                          quant={'coco/bbox_mAP': 0.10, 'coco/segm_mAP': 0.1})
    sampled['method']['max_samples'] = 4096
    rows = {r.method: r for r in aggregate(exact + [sampled])}
    assert set(rows) == {'QHyViT', 'QHyViT (max_samples=4096)'}
    assert rows['QHyViT'].seeds == [0, 1], 'a later sampled run does not replace the exact run of its seed'
    assert rows['QHyViT (max_samples=4096)'].quant['box_ap'].values == pytest.approx([10.0])
    assert rows['QHyViT'].quant['box_ap'].values == pytest.approx([30.0, 31.0])
