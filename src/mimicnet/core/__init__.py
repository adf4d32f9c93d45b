"""The bottom layer: errors, artifacts on disk (atomic writes, hashing, checkpoints), the run index, budgets
as units, and a description of the machine. Imports nothing else of mimicnet."""
