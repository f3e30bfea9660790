"""deepmetric: deep metric learning with fast losses, trustworthy evaluation and six published methods."""

from deepmetric.errors import ConfigError, DataError, DeepMetricError, InputError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "DeepMetricError", "InputError", "__version__"]
