"""The web console at `/ui` (SPEC §13): server-rendered pages for the people who run the daemon.

- `app`: the mount, its security headers and the session gate (sign-in, CSRF) in front of every page;
- `session`: server-side sessions and CSRF tokens; `login`: sign-in and sign-out;
- `pages`: the routines list and a routine's page with its actions; `pages_ops`: timeline, sync,
  approvals, system; `listing` and `firetimes`: what those pages compute;
- `render`: the Jinja environment (autoescape everywhere) and the HTML error page;
- `templates/`, `static/`: shipped in the package (no CDN, no build step).
"""

from palyra_ops.server.ui.app import console_mount
from palyra_ops.server.ui.render import UI_PREFIX

__all__ = ["UI_PREFIX", "console_mount"]
