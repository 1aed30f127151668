"""Answering reads from imagehook's own database: caches, batched loads, change watch, listings."""
