from .accuracy import TopKAccuracy
from .feature_fidelity import FeatureFidelity, feature_fidelity, nearest_neighbours, sqnr_db
from .results import write_json_atomic

__all__ = ['write_json_atomic', 'TopKAccuracy', 'FeatureFidelity', 'feature_fidelity', 'nearest_neighbours',
           'sqnr_db']
