"""The framework-free core: no celery, paramiko or psycopg imports below this package."""
