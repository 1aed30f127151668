"""In-process emulator of Kie.ai (market jobs, 4o Image, Flux Kontext, file upload) and kvid.ai's image API,
with fault injection and /emulator/* control endpoints."""

from app.emulator.app import create_emulator
from app.emulator.faults import Faults

__all__ = ["Faults", "create_emulator"]
