"""Create the database named in DATABASE_URL when it does not exist yet (idempotent).

DATABASE_URL is read as the service reads it (settings/database.py), multi-host form included:
the database is created on whichever listed server is the primary.
"""

import os
import sys
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from settings.database import database_config

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/omk"


def main() -> int:
    config = database_config(os.environ.get("DATABASE_URL", DEFAULT_URL))
    params = {
        **config.get("OPTIONS", {}),
        "host": config["HOST"] or "127.0.0.1",
        "port": config["PORT"] or 5432,
        "user": config["USER"] or "postgres",
        "password": config["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
            print(f"created database {config['NAME']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
