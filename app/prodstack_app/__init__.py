"""prodstack demo service: Flask + gunicorn in front of Redis and PostgreSQL."""

__version__ = "0.1.0"
