"""mimicnet: how deep and how convolutional must a network be?

One module per pipeline stage: data, augment, models, train, ensemble, transfer, search, report, cli.
"""
from __future__ import annotations

__version__ = "0.1.0"
