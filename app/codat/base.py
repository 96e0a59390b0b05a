"""Codat's one server (every OpenAPI file and SDK names only this): settings default to
it, and no other part of the service spells it."""

BASE_URL = "https://api.codat.io"
