"""Gateways to the clients people already have: an OpenAI-compatible HTTP API (`voxbus http`)
and a Wyoming server for Home Assistant (`voxbus wyoming`). Each is only a client of the bus and
the ModelManager: neither loads a model, and any number of them can run side by side."""
