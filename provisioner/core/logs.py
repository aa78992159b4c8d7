"""Logging to stderr (data goes to stdout) and timed steps.

`setup_logging()` is called once by the CLI. `step("writing image")` logs the start and the
elapsed time of a unit of work, so every long command explains where its time went.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("provisioner")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            event.update(extra)
        return json.dumps(event, sort_keys=True)


def setup_logging(*, debug: bool = False, verbose: bool = False, json_format: bool = False) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextlib.contextmanager
def step(name: str, logger: logging.Logger = log) -> Iterator[None]:
    """Log `name`, run the block, log how long it took (also when it fails)."""
    logger.info("%s ...", name)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        logger.info("%s failed after %.2f s", name, time.monotonic() - start)
        raise
    logger.info("%s done in %.2f s", name, time.monotonic() - start)
