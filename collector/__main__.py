"""`python -m collector`: load the settings once, log to stdout, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from common.config import ConfigError, load_settings

log = logging.getLogger("collector")


async def _main() -> int:
    from collector.service import CollectorService

    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level)
    log.info("settings: %s", settings.masked())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await CollectorService(settings).run(stop)
    return 0


def main() -> int:
    logging.Formatter.converter = time.gmtime  # UTC, YYYYMMDD HH:MM:SS like every display
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s UTC %(levelname)s %(name)s: %(message)s",
        datefmt="%Y%m%d %H:%M:%S",
    )
    try:
        return asyncio.run(_main())
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
