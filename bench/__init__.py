"""Benchmarks of imagehook against a bare Starlette app on the same machine: `python -m bench`."""
