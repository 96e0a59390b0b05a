"""HTTP routes other than the webhook: health now, the status API later."""
