"""Training and evaluation toolkit: manifests and splits, augmentation, the trainer, evaluation, metrics, info."""
