"""What an operator sees of a running gateway: metrics (metrics.py) and logs (logs.py)."""
