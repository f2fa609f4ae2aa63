"""A local X emulator: the endpoints, deliveries and faults the catfacts bot meets on real X."""
from x_emulator.server import Credentials, Faults, SentDM, XEmulator

__all__ = ["Credentials", "Faults", "SentDM", "XEmulator"]
