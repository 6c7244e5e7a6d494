"""Datasets as device-resident tensors, and the Lightning data module that slices them."""
