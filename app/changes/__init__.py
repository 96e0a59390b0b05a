"""What changed, recorded once (the outbox), read as a feed and sent as notifications."""
