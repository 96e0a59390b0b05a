"""Receiving: the only part that knows Svix. Verify, store once, answer fast."""
