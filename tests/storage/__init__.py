"""Storage pipeline tests: cascades, spool, TimescaleDB and Redis writers, the pipeline."""
