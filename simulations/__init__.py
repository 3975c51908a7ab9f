"""Drift scenarios, traffic simulation and the ``vidmon`` command line."""
