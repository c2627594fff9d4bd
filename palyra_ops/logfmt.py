"""The daemon's log formats: human text, or JSON lines (`--log-format json`, SPEC §12).

JSON lines are what log pipelines (Loki, Elasticsearch, `jq`) ingest without a parser per message:
one object per record with `ts` (RFC 3339, UTC), `level`, `logger`, `msg`, and the record's
structured `fields` when the caller gave them — every finished run does (`palyra_ops.runs`: routine,
run, status, attempt, trigger, duration, reason), so one line per run can be alerted on by field.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    return JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
