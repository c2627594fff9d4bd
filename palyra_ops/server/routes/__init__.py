"""The daemon's routes, one module per area; each route declares its operation next to its handler."""
