"""The database schema (ordered SQL files) and the runner that applies them."""
