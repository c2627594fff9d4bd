"""Builders for routine directories used by the plan/apply tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

MODELINE = "# yaml-language-server: $schema=../schemas/routine.schema.json\n"


def routine_yaml(
    name: str,
    *,
    cron: str | None = "0 9 * * *",
    every: str | None = None,
    timezone: str = "utc",
    prompt: str = "say hello",
    extra_spec: str = "",
) -> str:
    if every:
        sched = f"every: {every}"
    else:
        sched = f'cron: "{cron}"\n          timezone: {timezone}'
    body = f"""\
    apiVersion: palyra/v1
    kind: Routine
    metadata:
      name: {name}
    spec:
      prompt: {prompt}
      trigger:
        kind: schedule
        schedule:
          {sched}
    """
    text = textwrap.dedent(body)
    if extra_spec:
        text += textwrap.indent(textwrap.dedent(extra_spec), "  ")
    return text


def channel_yaml(name: str, path: str = "out.jsonl") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: palyra/v1
        kind: Channel
        metadata:
          name: {name}
        spec:
          type: file
          path: {path}
        """
    )


def write(directory: Path, rel: str, *docs: str) -> Path:
    p = directory / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(MODELINE + "---\n".join(docs), encoding="utf-8")
    return p
