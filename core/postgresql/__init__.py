"""Django's PostgreSQL backend with a pool check that survives a server restart (`base.py`)."""
