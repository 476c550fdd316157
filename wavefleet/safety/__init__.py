"""Safety: every agent action scored before it runs (rules, then a judge), secrets kept out of every
output, and preflight probes (README "Safety", DESIGN.md "Safety")."""
