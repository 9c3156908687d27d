"""The collector: every device's MQTT messages into one database (SQLite or PostgreSQL), status,
exports in the formats ecologists use, and a read-only web page (``wildedge collect ...``).

Imports nothing heavy at import time: ``wildedge --help`` stays fast, and a missing
``collector`` extra is reported by each command in one line.
"""
