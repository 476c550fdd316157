"""The role workers of a domain team and the agents they run (PM, FE, BE, QA, CTO)."""
