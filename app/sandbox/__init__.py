"""A local stand-in for Codat: the fake the tests run against, servable on its own
(`codat-webhooks sandbox`), which `make run` uses when there is no Codat account."""

#: Not a secret: the key `make run` gives both the service and the sandbox, so that the
#: service's `Authorization` header is checked as Codat checks it.
SANDBOX_API_KEY = "codat-sandbox-key"
