"""Where events end up: TimescaleDB (all history), Redis (the live 60-minute view), the local spool."""
