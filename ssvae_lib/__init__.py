"""ssvae_lib: a small, tested library behind the SSVAE teaching companion.

Modules, in the order data flows: data -> models -> objectives/estimators -> train -> sweep
(many runs at once) -> store (results folders; grids of runs: grid);
toy (exact answers), metrics -> plots -> widgets.
"""
from .settings import FAST

__version__ = "0.1.0"
__all__ = ["FAST", "__version__"]
