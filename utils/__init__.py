"""Leaf helpers with no service knowledge: settings, images, metrics."""
