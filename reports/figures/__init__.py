"""One module per report section's figures; each function returns a Fig or None (no data)."""
