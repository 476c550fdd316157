"""A small authentication service: password hashing and signed session tokens."""
