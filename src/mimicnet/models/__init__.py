"""Models: the network families (registered by name), parameter counting, the budget solver, and
checkpoints (rebuild a model from the config stored inside its file). Imports core and data."""

from . import families  # noqa: E402  (registers the paper's and S5/S6 families)
from . import modern  # noqa: E402  (registers the airbench family beside them)

__all__ = ["families", "modern"]
