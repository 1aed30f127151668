"""Kie.ai: the market jobs API and the dedicated 4o Image and Flux Kontext APIs."""
