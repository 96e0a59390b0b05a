"""The operator dashboard under /ui: server-rendered pages over the status API's queries
and the commands, on the internal listener (the only one when INTERNAL_PORT is unset)."""
