"""The Codat client: the only code that knows Codat's URLs. It speaks HTTP, knows no tables."""
