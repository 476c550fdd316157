"""A small payments service: exact money amounts and a double-entry ledger."""
