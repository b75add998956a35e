"""The alerter: rules over the collector's event stream, delivered to Telegram and webhooks (`python -m alerter`)."""
