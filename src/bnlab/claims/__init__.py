"""The article's claims: saved studies run, judged by rules, and shown on a page."""
