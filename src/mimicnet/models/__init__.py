"""Models: the network families (registered by name), parameter counting, the budget solver, and
checkpoints (rebuild a model from the config stored inside its file). Imports core and data."""

from . import modern  # noqa: E402  (registers the airbench family beside families.py's)

__all__ = ["modern"]
