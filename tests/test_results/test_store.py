"""The SQLite results store: round trips, concurrent writers, and clean failures that keep stored records."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3

import pytest
from fake_records import fake_record

from quant_hooks.results import RecordError, ResultStore, StoreError


def _digest(path) -> str:
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_records_load_back_identically_and_filter(tmp_path):
    records = [fake_record(model=m, w_bits=b, a_bits=b, seed=s, created_at=f'2026-01-0{1 + s}T00:00:00+00:00',
                           commit=c * 40, float_={'coco/bbox_mAP': 0.4}, extra={'n': [1, 2.5]})
               for m, c in (('swin_t', 'a'), ('swin_s', 'b')) for b in (4, 8) for s in (0, 1)]
    with ResultStore(tmp_path / 's.sqlite') as store:
        assert store.append(records) == 8
        assert store.records() == records
        assert store.records(model='swin_s', w_bits=[4]) == [r for r in records if r['model'] == 'swin_s'
                                                             and r['w_bits'] == 4]
        assert len(store.records(since='2026-01-02')) == 4 and len(store.records(commit='bbb')) == 4
        assert len(store.records(until='2026-01-01')) == 4  # the whole day (records at 00:00:00)
        assert len(store.records(until='2026-01-01T00:00:00+00:00')) == 4
        assert len(store.records(until='2025-12-31', since='2025-01-01')) == 0
        assert store.has_run(records[0]['config_hash'], '0123456789abcdef')
        assert not store.has_run(records[0]['config_hash'], None)
        with pytest.raises(ValueError, match="filter 'colour' is invalid"):
            store.records(colour='red')
    with ResultStore(tmp_path / 's.sqlite') as store:  # reopened
        assert store.records() == records


def test_missing_field_is_refused_and_nothing_written(tmp_path):
    good, bad = fake_record(), fake_record()
    del bad['checkpoint_sha256']
    with ResultStore(tmp_path / 's.sqlite') as store:
        with pytest.raises(RecordError, match="record 1: result record is missing the required field "
                                              "'checkpoint_sha256'"):
            store.append([good, bad])
        assert store.count() == 0


def test_append_only_and_duplicate_run_ids(tmp_path):
    record = fake_record()
    with ResultStore(tmp_path / 's.sqlite') as store:
        store.append(record)
        with pytest.raises(StoreError, match='same run_id is already stored'):
            store.append([fake_record(), record])
        assert store.count() == 1
        for sql in ('UPDATE records SET model = "x"', 'DELETE FROM records'):
            with pytest.raises(sqlite3.IntegrityError, match='append-only'):
                store.conn.execute(sql)
        assert store.records() == [record]


def test_jsonl_export_import_round_trip(tmp_path):
    records = [fake_record(seed=s) for s in range(3)]
    with ResultStore(tmp_path / 'a.sqlite') as a:
        a.append(records)
        assert a.export_jsonl(tmp_path / 'out.jsonl') == 3
    lines = (tmp_path / 'out.jsonl').read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    with ResultStore(tmp_path / 'b.sqlite') as b:
        b.append(records[0])
        assert b.import_jsonl(tmp_path / 'out.jsonl') == (2, 1)
        assert sorted(r['run_id'] for r in b.records()) == sorted(r['run_id'] for r in records)
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(lines[0] + '\n' + json.dumps({k: v for k, v in records[1].items() if k != 'model'}) + '\n')
    with ResultStore(tmp_path / 'c.sqlite') as c:
        with pytest.raises(RecordError, match=r"bad.jsonl:2: result record is missing the required field 'model'"):
            c.import_jsonl(bad)
        assert c.count() == 0


def _writer(path, worker, n):
    with ResultStore(path, timeout=60) as store:
        for i in range(n):
            store.append(fake_record(model=f'worker{worker}', seed=i, run_id=f'{worker}-{i:04d}'))


def test_two_processes_200_records_each(tmp_path):
    path = str(tmp_path / 's.sqlite')
    ResultStore(path).close()
    ctx = multiprocessing.get_context('spawn')
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with ResultStore(path) as store:
        records = store.records()
    assert len(records) == 400
    for w in range(2):
        mine = [r for r in records if r['model'] == f'worker{w}']
        assert [r['run_id'] for r in mine] == [f'{w}-{i:04d}' for i in range(200)]  # in order, none lost
        assert [r['calibration']['seed'] for r in mine] == list(range(200))


def test_corrupt_store_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / 's.sqlite'
    with ResultStore(path) as store:
        store.append(fake_record())
    data = bytearray(path.read_bytes())
    data[:16] = b'garbage garbage!'
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(StoreError, match='is corrupt or not a SQLite file'):
        ResultStore(path)
    assert _digest(path) == before
    text = tmp_path / 'notes.sqlite'
    text.write_text('not a database at all, just text that is long enough to have a header')
    with pytest.raises(StoreError, match='corrupt'):
        ResultStore(text)


def test_corrupt_pages_are_reported(tmp_path):
    path = tmp_path / 's.sqlite'
    with ResultStore(path) as store:
        store.append([fake_record(seed=s, extra={'pad': 'x' * 3000}) for s in range(20)])
        store.conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page:len(data) - page] = b'\xff' * (len(data) - 3 * page)  # keep the header page, wreck the rest
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match='corrupt'):
        ResultStore(path).records()


def test_locked_store_gives_clear_error_and_keeps_records(tmp_path):
    path = tmp_path / 's.sqlite'
    first = fake_record()
    with ResultStore(path) as store:
        store.append(first)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute('BEGIN EXCLUSIVE')
    try:
        with ResultStore(path, timeout=0.05, retries=2) as store:
            with pytest.raises(StoreError, match='is locked by another process .* nothing was written'):
                store.append(fake_record())
    finally:
        other.execute('ROLLBACK')
        other.close()
    with ResultStore(path) as store:
        assert store.records() == [first]
        store.append(fake_record())  # usable again once the lock is gone
        assert store.count() == 2


def test_full_disk_rolls_back_and_keeps_records(tmp_path):
    path = tmp_path / 's.sqlite'
    kept = [fake_record(seed=s) for s in range(3)]
    with ResultStore(path) as store:
        store.append(kept)
        pages = store.conn.execute('PRAGMA page_count').fetchone()[0]
        # the disk "fills up": SQLite may not grow the file beyond its current size
        store.conn.execute(f'PRAGMA max_page_count={pages}')
        big = [fake_record(seed=10 + i, extra={'pad': 'x' * 20000}) for i in range(3)]
        with pytest.raises(StoreError, match='the disk is full .* nothing was written, the existing records are '
                                             'intact'):
            store.append(big)
        assert store.records() == kept
    with ResultStore(path) as store:
        assert store.records() == kept


def test_store_tool_export_import_list(tmp_path, capsys):
    from tiny_runs import load_tool
    tool = load_tool('results_store')
    records = [fake_record(model=m, seed=s) for m in ('a', 'b') for s in range(2)]
    with ResultStore(tmp_path / 'a.sqlite') as store:
        store.append(records)
    assert tool.main(['export', str(tmp_path / 'a.sqlite'), str(tmp_path / 'b.jsonl'), '--model', 'b']) == 0
    assert tool.main(['import', str(tmp_path / 'new.sqlite'), str(tmp_path / 'b.jsonl')]) == 0
    assert tool.main(['import', str(tmp_path / 'new.sqlite'), str(tmp_path / 'b.jsonl')]) == 0
    out = capsys.readouterr().out
    assert 'exported 2 records' in out and 'imported 2 records' in out and 'imported 0 records' in out
    with ResultStore(tmp_path / 'new.sqlite') as store:
        assert store.records() == records[2:]
    assert tool.main(['list', str(tmp_path / 'new.sqlite')]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
