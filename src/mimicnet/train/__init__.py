"""Training one run: its config (config.py), losses, optimizers and schedules (registered by name), batch
sources, the run folder (identity, resume point, results) and the loop itself (loop.fit).
Imports core, data and models."""
