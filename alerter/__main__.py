"""`python -m alerter`: load the settings and rules once, log to stdout, run until SIGTERM or SIGINT.

Exit codes: 0 after a clean stop, 2 for a bad setting or a malformed rules file (the message names
the variable, or the file and line).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

import psycopg
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

from alerter.rules import RulesError, load_rules
from alerter.settings import load_alerter_settings
from common.config import ConfigError

log = logging.getLogger("alerter")


async def _main() -> int:
    from alerter.service import AlerterService

    settings = load_alerter_settings()
    logging.getLogger().setLevel(settings.common.log_level)
    rules = load_rules(settings.alerts_file)
    log.info("settings: %s", settings.masked())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await AlerterService(settings, rules).run(stop)
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
    except RulesError as exc:
        log.error("rules: %s", exc)
        return 2
    except (OSError, psycopg.Error, PoolTimeout, RedisError) as exc:
        log.error("cannot start: %s: %s", type(exc).__name__, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
