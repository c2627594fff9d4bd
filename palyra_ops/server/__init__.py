"""The daemon's HTTP edge (SPEC §6): the only layer that speaks HTTP.

- `app`: the Starlette app, its route table and middleware order;
- `auth`: the bearer-token check; `body`: body limits and the JSON reader;
- `errors`: domain error → status, and the one error body;
- `operation`: what each route declares about itself (the OpenAPI document is generated from it);
- `routes/`: the handlers, one module per area.
"""

from palyra_ops.server.app import create_app, routes
from palyra_ops.server.auth import PUBLIC_PATHS

__all__ = ["PUBLIC_PATHS", "create_app", "routes"]
