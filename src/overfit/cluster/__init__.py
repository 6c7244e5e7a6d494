"""The cluster path: SLURM job states, requeue, and the submitit launcher that survives them."""
