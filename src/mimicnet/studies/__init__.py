"""Studies: the presets of the three papers' studies and the stages that run them (the main study in
main.py; the fixed-arm studies of Ba & Caruana and Ratusznik et al. in fixed.py), the papers' published
numbers, and the cost estimate of a preset. Imports core .. search."""
