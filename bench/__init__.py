"""Benchmarks, run as modules: `python -m bench.<name>` (e.g. `python -m bench.bench_parse`)."""
