"""Receiving: the only part that knows Svix. Verify, store once, answer fast."""

WEBHOOK_PATH = "/webhooks/codat"
