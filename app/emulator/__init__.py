"""In-process emulator of Kie.ai's market jobs API (createTask, recordInfo, callbacks) with fault injection."""

from app.emulator.app import create_emulator
from app.emulator.faults import Faults

__all__ = ["Faults", "create_emulator"]
