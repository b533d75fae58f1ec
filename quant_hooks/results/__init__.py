"""Result records, the SQLite results store, and the leaderboard / regression / sensitivity logic.

Pure Python (sqlite3, matplotlib); nothing here imports an mm* package.
"""
from .record import build_record, infer_model_name, infer_scope, infer_task
from .schema import SCHEMA_VERSION, TASKS, RecordError, validate_record
from .store import ResultStore, StoreError, read_jsonl

__all__ = ['SCHEMA_VERSION', 'TASKS', 'RecordError', 'validate_record', 'build_record', 'infer_task',
           'infer_model_name', 'infer_scope', 'ResultStore', 'StoreError', 'read_jsonl']
