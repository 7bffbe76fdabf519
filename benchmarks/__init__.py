"""Speed and cost measurements (scripts run with `python -m benchmarks.NAME`); never timed tests."""
