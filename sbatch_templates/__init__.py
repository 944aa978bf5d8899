"""The sbatch templates shipped with ftslurm (read with importlib.resources)."""
