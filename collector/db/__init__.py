"""The collector's database: schema, engine by URL (SQLite or PostgreSQL), migrations."""

from collector.db.engine import default_url, insert, open_engine, redact
from collector.db.migrate import VERSION, migrate

__all__ = ["VERSION", "default_url", "insert", "migrate", "open_engine", "redact"]
