"""Model inversion: white-box (ART MIFace) and query-only (a trained inversion network)."""
