"""Decisions carried out on this machine: the run-loop tick, GPUs, mounts, containment,
job files and outputs, and the launchers that start jobs."""
