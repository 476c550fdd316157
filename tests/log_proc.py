"""A process that logs a secret from its settings on purpose, every way a line can carry it.

Run with the WAVE_* variables of the test's settings; argv[1] is the secret. Its log lines go to
stderr (the test's log file), in the format the settings name.
"""

from __future__ import annotations

import logging
import sys

from wavefleet import logs
from wavefleet.config import load_settings


def main(secret: str) -> None:
    logs.setup_for("LOG-PROC", load_settings())
    log = logs.get()
    log.warning(f"the key is {secret}")  # in the message
    log.warning("a field", key=secret, nested={"headers": [("x-api-key", f"Bearer {secret}")]})
    try:
        raise RuntimeError(f"the provider said: invalid key {secret}")
    except RuntimeError as exc:
        log.exception("an exception", error=exc)  # the traceback and the exception object
        logging.getLogger("httpx").warning("stdlib line: %s", secret, exc_info=True)
    logs.get(story="AUTH-001").info("done")


if __name__ == "__main__":
    main(sys.argv[1])
