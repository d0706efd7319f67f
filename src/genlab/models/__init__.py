"""LightningModules: how each model family is trained and sampled."""
