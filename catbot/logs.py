"""One structured line per meaningful event: ``event=reply.sent user=... status=201``.

logfmt-style key=value pairs read well in ``heroku logs`` and parse with any log tool. DM text
and secrets are never passed here; user ids are.
"""
from __future__ import annotations

import logging
import sys

_configured = False


def _value(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log ``event=name`` followed by the fields, in the order given."""
    if logger.isEnabledFor(level):
        pairs = " ".join(f"{key}={_value(val)}" for key, val in fields.items() if val is not None)
        logger.log(level, "event=%s%s", name, " " + pairs if pairs else "")


def configure(level: str = "INFO") -> None:
    """Send the bot's logs to stderr once per process (gunicorn captures it)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("catbot", "huey"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("huey").setLevel(max(logging.getLevelName(level), logging.WARNING)
                                       if isinstance(logging.getLevelName(level), int) else logging.WARNING)
    _configured = True
