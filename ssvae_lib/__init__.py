"""ssvae_lib: a small, tested library behind the SSVAE teaching companion.

Modules, in the order data flows: data -> models -> objectives/estimators -> engine (one loop for one or
many runs; train = one run) -> store (results folders; grids of runs: grid); toy (exact answers),
metrics, diagnostics -> plots -> widgets. The README's "Architecture" section has one line per module.
"""
from .settings import FAST

__version__ = "0.1.0"
__all__ = ["FAST", "__version__"]
