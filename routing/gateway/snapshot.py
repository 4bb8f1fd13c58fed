"""Placeholder until the gateway lands: config-change notices are no-ops."""


def announce_change():
    pass
