"""The other platforms the bot answers on (Messenger, LINE, Telegram, Dialogflow), played by
the same emulator so tests and ``make demo`` never leave loopback. One module per platform,
found by name (no list to edit), each with:

- ``bp``: a Flask Blueprint with the platform's own API routes the bot calls (the bot's
  ``<PLATFORM>_API_BASE_URL`` points at the emulator), and control routes under
  ``/_emulator/<name>/``: ``POST setup`` ``{"webhook_url", "settings": {...}}`` (where the bot
  listens, and the secrets the platform shares with it, to sign deliveries), and ``POST
  deliver`` ``{"sender_id", "text", ...}`` -> ``{"event_id", "webhook_status"}``;
- ``State``: the platform's state, built with the emulator (``XEmulator.platform(name)``);
- ``DEMO_SETTINGS``: made-up settings the demo gives the bot and the emulator alike.

A reply the bot sends is recorded with ``XEmulator.record_sent`` as a ``SentDM`` whose
``channel`` is the platform's name, so ``wait_for_sent``, ``sent_to`` and ``/_emulator/sent``
see every platform's replies.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType


@cache
def platform_modules() -> dict[str, ModuleType]:
    """Every platform module, by name."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "bp") and hasattr(module, "State"):
            found[info.name] = module
    return dict(sorted(found.items()))
