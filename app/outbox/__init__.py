"""Work owed to the outside world after a commit: webhook deliveries and result copies."""
