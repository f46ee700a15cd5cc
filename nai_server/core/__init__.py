"""Pure logic: job states, job spec, trees, scheduling. No I/O, no clock, no NVML."""
