"""Model extraction through a prediction API (OWASP ML05)."""
