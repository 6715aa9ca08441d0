"""PostgreSQL access: migrations, the connection pool and typed queries."""
