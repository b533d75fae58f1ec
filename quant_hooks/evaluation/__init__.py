from .results import write_json_atomic

__all__ = ['write_json_atomic']
