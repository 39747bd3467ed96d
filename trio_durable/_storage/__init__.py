"""Storage: the backend seam (``_backend``), the SQLite default (``sqlite``)."""
