"""Adapters behind the core's ports: PostgreSQL (psycopg 3) and SFTP (paramiko)."""
