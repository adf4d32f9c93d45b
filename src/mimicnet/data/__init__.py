"""Data: CIFAR archives and feature files, the train/validation split, batched augmentation on tensors,
preprocessing (per-image standardisation, GCN + ZCA). Imports only mimicnet.core."""
