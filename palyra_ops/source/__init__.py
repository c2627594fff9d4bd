"""Loading and validating a routine directory (SPEC §2).

A routine directory is untrusted input that ends up driving a scheduler, so this package is strict
and total: every file is read with hard limits, parsed with a YAML dialect reduced to the core
schema, validated against `schemas/routine.schema.json` plus semantic and cross-file checks, and
every problem becomes a positioned `Diagnostic` instead of an exception. Callers (validate, plan,
apply, the directory watcher) decide what to do with a set that is not `ok`.

Four rooms, each depending only on the ones before it:

- `yaml_strict`: the YAML dialect (core-schema resolver, strict constructor, alias and size limits);
- `findings`: one document's problems in words (schema-error translation, semantic and reference
  checks) and `check_document`, the same verdict for a document that arrives without a file;
- `file`: one file (bytes refused before parsing, its documents, line:column of every finding);
- `directory`: discovery, the per-file cache, cross-file checks and `load_directory`.

Speed matters because plan re-reads the whole directory every time: the happy path is libyaml's C
parser, a cached scalar resolver, a small hand-rolled constructor and a fastjsonschema validator
compiled once per process. The expensive machinery (jsonschema's detailed errors, re-parsing a file
to find line:column of a finding) only runs for documents that actually have a problem.
"""

from palyra_ops.source.directory import (
    CACHE_FORMAT,
    Document,
    FileConsumer,
    FileDocuments,
    FileReport,
    SourceSet,
    iter_documents,
    load_directory,
)
from palyra_ops.source.file import MAX_FILE_BYTES
from palyra_ops.source.findings import SkillsUnchecked, check_document, format_path, schema, schema_path
from palyra_ops.source.yaml_strict import MAX_EXPANDED_NODES, StrictLoader

__all__ = [
    "CACHE_FORMAT",
    "MAX_EXPANDED_NODES",
    "MAX_FILE_BYTES",
    "Document",
    "FileDocuments",
    "FileReport",
    "FileConsumer",
    "SkillsUnchecked",
    "SourceSet",
    "StrictLoader",
    "check_document",
    "format_path",
    "iter_documents",
    "load_directory",
    "schema",
    "schema_path",
]
