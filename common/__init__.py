"""Code shared by the collector, the app and the migration runner: config, event types, keys."""
