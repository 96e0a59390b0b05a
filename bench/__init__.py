"""Benchmarks; `python -m bench.receive` compares the webhook route with a minimal receiver."""
