"""Synthetic training data: pseudo-fakes made from real faces (self-blended images)."""
