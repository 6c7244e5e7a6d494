"""Models, optimizers, the Lightning module and trainer, and the task that trains one point."""
