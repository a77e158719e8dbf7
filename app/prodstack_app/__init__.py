"""prodstack demo service: Flask under Granian in front of Redis and PostgreSQL."""

# The version, in one place: the app reports it (APP_VERSION overrides it per deployment).
__version__ = "0.1.0"
