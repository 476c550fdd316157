"""Protocol-faithful local servers for the external services WAVE talks to (127.0.0.1 only)."""
