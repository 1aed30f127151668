"""kvid.ai's image API."""
