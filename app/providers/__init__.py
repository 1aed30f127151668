"""Upstream image providers: their HTTP clients, model table and wire formats.

The rest of imagehook speaks to them through `base` (what a provider can do) and `registry`
(which providers this deployment has).
"""
