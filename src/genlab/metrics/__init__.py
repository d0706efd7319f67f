"""Metric building blocks (torchmetrics underneath)."""
