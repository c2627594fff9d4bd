"""The JSON response every route (and every error) answers with."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


class JSONResponse(Response):
    """Compact UTF-8 JSON that tolerates non-JSON values from status providers (rendered with `str`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
