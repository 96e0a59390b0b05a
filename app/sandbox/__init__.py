"""A local stand-in for Codat: the fake the tests run against, servable on its own."""
