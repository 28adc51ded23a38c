"""Torch-side graph code that every exporter traces: the I/O contract wrappers (contract.py), the ratio downsample
sampled exactly where PyTorch samples it (resample.py), the refiner's full-resolution tail in the layouts targets
choose from (refiner_tail.py), and export-only rewrites applied while tracing (rewrites.py). Nothing here imports a
runtime."""
