"""The syllabus maths: losses, activations, layers, regularizers, feature maps, gradient checks.

Plain PyTorch, no Lightning, no MLflow: every formula sits beside its gradient.
"""
