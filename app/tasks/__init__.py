"""Tasks: their states, submission, updates, status, callbacks' inbox and the sweeper."""
