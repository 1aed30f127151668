"""Upstream image providers: their HTTP clients, model tables and wire formats."""
