"""An append-only SQLite store of result records, safe with several writers at once.

Every record is validated before it is written and when it is read back. Writes happen in one transaction
(``BEGIN IMMEDIATE``), so a crash, a full disk or a lock never leaves half a record; the journal is in WAL mode
so readers never block the writer, and a busy store is waited for (SQLite busy timeout) and retried before
:class:`StoreError` says it is locked. Triggers refuse UPDATE and DELETE: records are only ever added.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import sqlite3
import tempfile
import time
from collections.abc import Iterable

from .schema import RecordError, to_jsonable, validate_record

#: the layout version of the SQLite file (not the record schema version)
STORE_FORMAT = 1
_SQLITE_MAGIC = b'SQLite format 3\x00'

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    w_bits INTEGER NOT NULL,
    a_bits INTEGER NOT NULL,
    scope TEXT NOT NULL,
    seed INTEGER,
    config_hash TEXT NOT NULL,
    checkpoint_sha256 TEXT,
    git_commit TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_run_key ON records (config_hash, checkpoint_sha256);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the results store is append-only: records cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the results store is append-only: records cannot be deleted'); END;
"""

_COLUMNS = ('run_id', 'created_at', 'task', 'model', 'method', 'w_bits', 'a_bits', 'scope', 'seed', 'config_hash',
            'checkpoint_sha256', 'git_commit', 'record')

#: filter name -> column (values may be one value or a list of values)
FILTERS = dict(task='task', model='model', method='method', w_bits='w_bits', a_bits='a_bits', scope='scope',
               seed='seed', config_hash='config_hash', checkpoint_sha256='checkpoint_sha256', run_id='run_id')


class StoreError(RuntimeError):
    """The store cannot be opened, read or written; the message says why and what was (not) written."""


def _row(record: dict) -> tuple:
    method = record['method'].get('type')
    seed = record['calibration'].get('seed')
    return (record['run_id'], record['created_at'], record['task'], record['model'], method, record['w_bits'],
            record['a_bits'], record['scope'], seed, record['config_hash'], record['checkpoint_sha256'],
            record['git'].get('commit'), json.dumps(record, sort_keys=True))


class ResultStore:
    """The results store in one SQLite file (created on first use).

    Args:
        path: the ``.sqlite`` file (``':memory:'``: a temporary store in memory).
        timeout: seconds SQLite waits for another writer's lock before one attempt fails.
        retries: further attempts (with growing pauses) after a locked attempt, before :class:`StoreError`.
    """

    def __init__(self, path: str, timeout: float = 30.0, retries: int = 5):
        self.path = str(path)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._conn: sqlite3.Connection | None = None
        self._open()

    # -- connection -----------------------------------------------------------------------------------------
    def _open(self) -> None:
        if osp.isdir(self.path):
            raise StoreError(f'results store {self.path!r} is a directory: give a file path')
        if osp.exists(self.path) and osp.getsize(self.path) > 0:
            with open(self.path, 'rb') as f:
                if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                    raise StoreError(f'results store {self.path!r} is corrupt or not a SQLite file (bad header); it '
                                     'was left untouched: restore it from a copy or give another path')
        if self.path != ':memory:':
            os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._retry(self._init_schema, 'open')
        except StoreError:
            self.close()
            raise
        except sqlite3.Error as e:
            self.close()
            raise self._error(e, 'open') from e

    def _init_schema(self) -> None:
        conn = self._conn
        mode = conn.execute('PRAGMA journal_mode=WAL').fetchone()[0]
        if mode.lower() != 'wal' and self.path != ':memory:':
            raise StoreError(f'results store {self.path!r}: cannot switch to WAL journal mode (got {mode!r})')
        conn.execute('PRAGMA synchronous=FULL')
        integrity = conn.execute('PRAGMA quick_check').fetchone()[0]
        if integrity != 'ok':
            raise StoreError(f'results store {self.path!r} is corrupt (SQLite quick_check: {integrity}); it was '
                             'left untouched: restore it from a copy or give another path')
        found = self._format()
        if found is None:  # a new store: create the tables (a write, so it waits for other writers)
            conn.execute('BEGIN IMMEDIATE')
            try:
                # one statement at a time: executescript() would commit the open transaction
                for statement in filter(str.strip, _TABLES.split(';\n')):
                    conn.execute(statement)
                if self._format() is None:
                    conn.execute("INSERT INTO meta VALUES ('store_format', ?)", (str(STORE_FORMAT), ))
                conn.execute('COMMIT')
            except BaseException:
                conn.execute('ROLLBACK')
                raise
            found = self._format()
        if found != str(STORE_FORMAT):
            raise StoreError(f'results store {self.path!r} has store_format {found}: this code reads format '
                             f'{STORE_FORMAT}')

    def _format(self) -> str | None:
        """The stored ``store_format``, ``None`` when the tables do not exist yet."""
        exists = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not exists:
            return None
        row = self._conn.execute("SELECT value FROM meta WHERE key='store_format'").fetchone()
        return row[0] if row else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, e: sqlite3.Error, action: str) -> StoreError:
        text = str(e)
        low = text.lower()
        if 'locked' in low or 'busy' in low:
            return StoreError(f'results store {self.path!r} is locked by another process (waited '
                              f'{self.timeout:g}s, {self.retries + 1} attempts) during {action}; nothing was '
                              'written, the existing records are intact')
        if 'full' in low or 'no space' in low:
            return StoreError(f'results store {self.path!r}: the disk is full ({text}) during {action}; the '
                              'transaction was rolled back, nothing was written, the existing records are intact')
        if 'disk i/o' in low or 'readonly' in low or 'read-only' in low:
            return StoreError(f'results store {self.path!r}: cannot write ({text}) during {action}; the '
                              'transaction was rolled back, nothing was written, the existing records are intact')
        if 'not a database' in low or 'malformed' in low or 'corrupt' in low:
            return StoreError(f'results store {self.path!r} is corrupt ({text}) during {action}; it was left '
                              'untouched: restore it from a copy or give another path')
        if 'append-only' in low:
            return StoreError(f'results store {self.path!r}: {text}')
        return StoreError(f'results store {self.path!r}: {action} failed: {text}')

    def _retry(self, fn, action: str):
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                low = str(e).lower()
                if ('locked' not in low and 'busy' not in low) or attempt == self.retries:
                    raise self._error(e, action) from e
                time.sleep(min(0.05 * 2**attempt, 2.0))
            except sqlite3.Error as e:
                raise self._error(e, action) from e

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f'results store {self.path!r} is closed')
        return self._conn

    # -- writing --------------------------------------------------------------------------------------------
    def append(self, records: dict | Iterable[dict], skip_existing: bool = False) -> int:
        """Add records in one transaction (all or none); returns how many were added.

        Args:
            records: one record or several; each is validated first.
            skip_existing: skip records whose ``run_id`` is already stored (imports); otherwise a repeated
                ``run_id`` is an error and nothing is written.
        """
        records = [records] if isinstance(records, dict) else list(records)
        rows = [_row(validate_record(to_jsonable(r), where=f'record {i}: ')) for i, r in enumerate(records)]
        verb = 'INSERT OR IGNORE' if skip_existing else 'INSERT'
        sql = f'{verb} INTO records ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})'

        def write():
            conn = self.conn
            conn.execute('BEGIN IMMEDIATE')
            try:
                before = conn.total_changes
                conn.executemany(sql, rows)
                added = conn.total_changes - before
                conn.execute('COMMIT')
                return added
            except BaseException:
                if conn.in_transaction:
                    conn.execute('ROLLBACK')
                raise

        try:
            return self._retry(write, f'writing {len(rows)} record(s)')
        except StoreError as e:
            if 'UNIQUE constraint failed' in str(e):
                raise StoreError(f'results store {self.path!r}: a record with the same run_id is already stored; '
                                 'nothing was written') from e
            raise

    # -- reading --------------------------------------------------------------------------------------------
    def _where(self, filters: dict) -> tuple[str, list]:
        clauses, params = [], []
        for name, value in filters.items():
            if value is None:
                continue
            if name == 'since':
                clauses.append('created_at >= ?')
                params.append(str(value))
            elif name == 'until':  # inclusive: --until 2026-02-28 keeps the whole day
                clauses.append('substr(created_at, 1, ?) <= ?')
                params += [len(str(value)), str(value)]
            elif name == 'commit':
                values = [value] if isinstance(value, str) else list(value)
                clauses.append('(' + ' OR '.join('git_commit LIKE ?' for _ in values) + ')')
                params += [f'{v}%' for v in values]
            elif name in FILTERS:
                values = list(value) if isinstance(value, (list, tuple, set)) else [value]
                clauses.append(f'{FILTERS[name]} IN ({", ".join("?" * len(values))})')
                params += values
            else:
                raise ValueError(f'filter {name!r} is invalid: allowed filters are '
                                 f'{sorted([*FILTERS, "since", "until", "commit"])}')
        return (' WHERE ' + ' AND '.join(clauses)) if clauses else '', params

    def records(self, **filters) -> list[dict]:
        """Stored records in insertion order, each validated; ``filters``: any of :data:`FILTERS` (a value or
        a list), ``since`` / ``until`` (ISO dates on ``created_at``), ``commit`` (git commit prefix)."""
        where, params = self._where(filters)

        def read():
            return self.conn.execute(f'SELECT seq, record FROM records{where} ORDER BY seq', params).fetchall()

        out = []
        for seq, text in self._retry(read, 'reading'):
            try:
                out.append(validate_record(json.loads(text), where=f'store {self.path!r} row {seq}: '))
            except (json.JSONDecodeError, RecordError) as e:
                raise StoreError(f'results store {self.path!r}: row {seq} cannot be read: {e}') from e
        return out

    def count(self, **filters) -> int:
        where, params = self._where(filters)
        return self._retry(lambda: self.conn.execute(f'SELECT COUNT(*) FROM records{where}', params).fetchone()[0],
                           'counting')

    def has_run(self, config_hash: str, checkpoint_sha256: str | None = None) -> bool:
        """Whether a record with this config hash (and checkpoint digest) is stored."""
        sql = 'SELECT 1 FROM records WHERE config_hash = ? AND checkpoint_sha256 IS ? LIMIT 1'
        return self._retry(lambda: self.conn.execute(sql, (config_hash, checkpoint_sha256)).fetchone(),
                           'reading') is not None

    # -- JSON lines -----------------------------------------------------------------------------------------
    def export_jsonl(self, path: str, **filters) -> int:
        """Write the (filtered) records to ``path``, one JSON object a line, atomically; returns the count."""
        records = self.records(**filters)
        directory = osp.dirname(osp.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.jsonl', dir=directory)
        try:
            with os.fdopen(fd, 'w') as f:
                for r in records:
                    f.write(json.dumps(r, sort_keys=True) + '\n')
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
            os.replace(tmp, path)
        except BaseException:
            if osp.exists(tmp):
                os.unlink(tmp)
            raise
        return len(records)

    def import_jsonl(self, path: str) -> tuple[int, int]:
        """Add the records of a JSON-lines file in one transaction, skipping run_ids already stored; returns
        ``(added, skipped)``. Every line is validated before anything is written."""
        records = read_jsonl(path)
        added = self.append(records, skip_existing=True)
        return added, len(records) - added


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file, each validated (errors name the line)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(validate_record(json.loads(line), where=f'{path}:{n}: '))
            except json.JSONDecodeError as e:
                raise RecordError(f'{path}:{n}: not valid JSON: {e}') from e
    return out
