"""Several nodes (servers) of one deployment on a real PostgreSQL."""
