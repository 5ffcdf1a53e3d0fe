"""The training engine and what a run is made of: models, weights, optimizers, augmentation."""
