"""Checking what arrives from outside before anything else looks at it."""
