"""End-to-end tests: fake exchanges -> collector -> TimescaleDB and Redis, with faults."""
