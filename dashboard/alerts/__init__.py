"""Alerts: rules over Weathervane's own signals, Alertmanager-style noise control, and delivery to channels."""
