#!/usr/bin/env python3
"""Validates OpenLineage run events (one JSON event per line) against the official schemas.

Usage:
    validate_openlineage.py EVENTS.ndjson [--schemas DIR] [--expect-complete N]

Schema folder (the official OpenLineage JSON Schemas, kept outside the repository):
    1. --schemas DIR;
    2. else $LAKEFORGE_OPENLINEAGE_SCHEMAS;
    3. else the first existing of <repo>/../shared/openlineage and /work/shared/openlineage,
       where <repo> is two folders up from this script.
The folder holds OpenLineage.json (the core schema, spec 2-0-2) and facets/*.json (one facet
per file). Every file's `$id` is mapped to the local file in a `referencing.Registry`, so no
reference is ever fetched from the network.

Checks, per event (line):
  * the event is a valid RunEvent (`$defs/RunEvent` of the core schema, JSON Schema draft
    2020-12, with format checking of uuid, date-time and uri), and its `schemaURL` names the
    local core schema;
  * every facet in run.facets, job.facets, inputs[].facets, inputs[].inputFacets,
    outputs[].facets and outputs[].outputFacets is valid against the local facet schema whose
    `$id` is its `_schemaURL` (any `#/$defs/...` fragment must name that schema's facet
    definition). A facet whose `_schemaURL` is not a local schema is an error, the facet's key
    must be the one its schema declares (e.g. `columnLineage`), and the facet must sit where
    its base type says (a RunFacet in run.facets, a JobFacet in job.facets, a DatasetFacet in
    a dataset's facets, an OutputDatasetFacet in outputFacets, ...);
  * for an output with both `schema` and `columnLineage` facets, the columnLineage.fields keys
    are exactly the schema's (top-level) field names; every input field referenced by column
    lineage (fields.*.inputFields and dataset) names a dataset in the event's inputs and, when
    that input has a `schema` facet, one of its fields (for a nested `column.field`, its column).
Per run (same run.runId), in file order:
  * every event names the same job (namespace, name);
  * a START comes first, and the run ends with exactly one COMPLETE, FAIL or ABORT after it
    (OTHER events may come at any time, RUNNING only between the two).
With --expect-complete N: at least N COMPLETE events have an output with a columnLineage facet.

Errors are printed as `FILE:LINE: message` (exit status 1); on success a one-line summary is
printed (exit status 0). Setup problems (no schema folder, unreadable file) exit with 2.
Needs the Python standard library plus `jsonschema` and `referencing`
(pinned in tests/interop/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import urljoin

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

CORE_FILE = "OpenLineage.json"
FACETS_DIR = "facets"
SCHEMAS_ENV = "LAKEFORGE_OPENLINEAGE_SCHEMAS"
RUN_EVENT_DEF = "RunEvent"

EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
TERMINAL_EVENT_TYPES = ("COMPLETE", "FAIL", "ABORT")

# Where a facet may sit, by the core definition its schema extends. The core schema types each
# container with one of these bases (run.facets: RunFacet, inputs[].inputFacets:
# InputDatasetFacet, ...), but the bases barely differ, so schema validation alone does not
# catch a misplaced facet (which consumers then ignore). InputDatasetFacet is also accepted in
# a dataset's `facets`: DataQualityAssertionsDatasetFacet extends it although it applies to any
# dataset (OpenLineage issue #1876; the spec is moving it to DatasetFacet / `facets`).
ALLOWED_CONTAINERS = {
    "RunFacet": ("run.facets",),
    "JobFacet": ("job.facets",),
    "DatasetFacet": ("inputs[].facets", "outputs[].facets"),
    "InputDatasetFacet": ("inputs[].inputFacets", "inputs[].facets", "outputs[].facets"),
    "OutputDatasetFacet": ("outputs[].outputFacets",),
}

MAX_MESSAGE = 300


class SetupError(Exception):
    """The schemas or the input cannot be used at all (exit status 2)."""


# --------------------------------------------------------------------------------------------
# Format checks

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))",
    re.ASCII,
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f<>\"{}|\\^`]*")


def is_rfc3339_date_time(value: object) -> bool:
    """RFC 3339 `date-time` (what JSON Schema's format means): full date, time and offset."""
    if not isinstance(value, str):
        return True
    match = _RFC3339.fullmatch(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if match.group(9) is not None and (int(match.group(9)) > 23 or int(match.group(10)) > 59):
        return False
    try:
        datetime(year, month, day, hour, minute, min(second, 59))  # 60: a leap second
    except ValueError:
        return False
    return second <= 60


def is_absolute_uri(value: object) -> bool:
    """An absolute URI (scheme ':' ...), without characters a URI cannot contain."""
    return not isinstance(value, str) or bool(_URI.fullmatch(value))


def format_checker() -> FormatChecker:
    """Draft 2020-12 format checks: jsonschema's own (uuid, ...) plus date-time and uri.

    Without optional packages jsonschema checks neither `date-time` nor `uri`; these standard
    library versions are always used, so the outcome does not depend on what else is installed.
    """
    checker = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("date-time")(is_rfc3339_date_time)
    checker.checks("uri")(is_absolute_uri)
    return checker


# --------------------------------------------------------------------------------------------
# Schemas


@dataclass(frozen=True)
class FacetSchema:
    """One local facet schema: `properties: {<key>: {"$ref": "#/$defs/<definition>"}}`."""

    schema_id: str
    key: str
    definition: str
    base: str  # the core definition it extends: RunFacet, JobFacet, DatasetFacet, ...
    file: Path


@dataclass
class Schemas:
    directory: Path
    core_id: str
    run_event: Draft202012Validator
    facets: dict[str, FacetSchema]  # by $id
    facet_validators: dict[str, Draft202012Validator]  # by $id


def resolve_schema_dir(explicit: str | None) -> Path:
    if explicit:
        candidates, source = [Path(explicit)], "--schemas"
    elif os.environ.get(SCHEMAS_ENV):
        candidates, source = [Path(os.environ[SCHEMAS_ENV])], f"${SCHEMAS_ENV}"
    else:
        repo = Path(__file__).resolve().parent.parent.parent
        candidates = [repo.parent / "shared" / "openlineage", Path("/work/shared/openlineage")]
        source = "the default locations"
    for candidate in candidates:
        if (candidate / CORE_FILE).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise SetupError(
        f"no OpenLineage schema folder (with {CORE_FILE} and {FACETS_DIR}/) found via {source}: "
        f"tried {tried}; pass --schemas DIR or set ${SCHEMAS_ENV}"
    )


def load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SetupError(f"{path}: cannot read JSON: {e}") from e


def read_facet_schema(path: Path, contents: dict, core_id: str) -> FacetSchema:
    """Reads the facet key, definition and base type that a facet schema file declares."""
    properties = contents.get("properties")
    if not isinstance(properties, dict) or len(properties) != 1:
        raise SetupError(f"{path}: expected exactly one facet under `properties`")
    (key, prop), = properties.items()
    ref = prop.get("$ref", "") if isinstance(prop, dict) else ""
    if not ref.startswith("#/$defs/") or ref[len("#/$defs/"):] not in contents.get("$defs", {}):
        raise SetupError(f"{path}: properties.{key} is not a $ref to one of its $defs")
    definition = ref[len("#/$defs/"):]
    core_prefix = f"{core_id}#/$defs/"
    base_refs = [
        part["$ref"][len(core_prefix):]
        for part in contents["$defs"][definition].get("allOf", [])
        if isinstance(part, dict) and str(part.get("$ref", "")).startswith(core_prefix)
    ]
    if len(base_refs) != 1 or base_refs[0] not in ALLOWED_CONTAINERS:
        raise SetupError(f"{path}: $defs.{definition} does not extend one core facet type")
    return FacetSchema(contents["$id"], key, definition, base_refs[0], path)


def find_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from find_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from find_refs(value)


def load_schemas(directory: Path) -> Schemas:
    core_path = directory / CORE_FILE
    files = [core_path] + sorted((directory / FACETS_DIR).glob("*.json"))
    documents: dict[str, tuple[Path, dict]] = {}
    for path in files:
        contents = load_json(path)
        schema_id = contents.get("$id") if isinstance(contents, dict) else None
        if not isinstance(schema_id, str):
            raise SetupError(f"{path}: no $id")
        if schema_id in documents:
            raise SetupError(f"{path}: $id {schema_id} also in {documents[schema_id][0]}")
        try:
            Draft202012Validator.check_schema(contents)
        except SchemaError as e:
            raise SetupError(f"{path}: not a valid draft 2020-12 schema: {e.message}") from e
        documents[schema_id] = (path, contents)

    for schema_id, (path, contents) in documents.items():
        for ref in find_refs(contents):
            target = urljoin(schema_id, ref).partition("#")[0]
            if target not in documents:
                raise SetupError(f"{path}: $ref {ref} points outside the local schemas")

    core_id = next(schema_id for schema_id, (path, _) in documents.items() if path == core_path)
    if RUN_EVENT_DEF not in documents[core_id][1].get("$defs", {}):
        raise SetupError(f"{core_path}: no $defs.{RUN_EVENT_DEF}")
    registry = Registry().with_resources(
        (schema_id, DRAFT202012.create_resource(contents))
        for schema_id, (_, contents) in documents.items()
    )
    checker = format_checker()

    def validator(ref: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": ref}, registry=registry, format_checker=checker)

    facets = {
        schema_id: read_facet_schema(path, contents, core_id)
        for schema_id, (path, contents) in documents.items()
        if schema_id != core_id
    }
    return Schemas(
        directory=directory,
        core_id=core_id,
        run_event=validator(f"{core_id}#/$defs/{RUN_EVENT_DEF}"),
        facets=facets,
        facet_validators={
            schema_id: validator(f"{schema_id}#/$defs/{facet.definition}")
            for schema_id, facet in facets.items()
        },
    )


# --------------------------------------------------------------------------------------------
# Reporting


def json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """The specific errors behind an error: anyOf/oneOf errors only say that no branch matched.

    The core schema types facet containers as `anyOf` with a single branch, so every error in
    its context is relevant; with several branches, the best match stands for them.
    """
    if not error.context:
        yield error
    elif isinstance(error.validator_value, list) and len(error.validator_value) > 1:
        yield from leaf_errors(best_match(error.context))
    else:
        for sub in error.context:
            yield from leaf_errors(sub)


@dataclass
class Report:
    file: str
    errors: list[tuple[int, str]] = field(default_factory=list)
    _seen: set[tuple[int, str]] = field(default_factory=set)

    def error(self, line: int, message: str) -> None:
        if (line, message) not in self._seen:
            self._seen.add((line, message))
            self.errors.append((line, message))

    def schema_errors(self, line: int, prefix: list, errors: Iterable[ValidationError]) -> int:
        count = 0
        for error in errors:
            for leaf in leaf_errors(error):
                path = json_path(prefix + list(leaf.absolute_path))
                self.error(line, f"{path}: {shorten(leaf.message)}")
                count += 1
        return count

    def print(self) -> None:
        for line, message in sorted(self.errors, key=lambda e: e[0]):
            where = f"{self.file}:{line}" if line else self.file
            print(f"{where}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Per-event checks


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def dataset_id(dataset: dict) -> tuple[Any, Any]:
    return dataset.get("namespace"), dataset.get("name")


def describe_dataset(dataset: dict) -> str:
    return f"dataset (namespace {dataset.get('namespace')!r}, name {dataset.get('name')!r})"


def schema_field_names(dataset: dict) -> list[str] | None:
    """Top-level field names of a dataset's `schema` facet, or None without one."""
    schema = as_dict(dataset.get("facets")).get("schema")
    if not isinstance(schema, dict):
        return None
    return [f.get("name") for f in as_list(schema.get("fields")) if isinstance(f, dict)]


def facet_containers(event: dict) -> Iterator[tuple[str, list, dict]]:
    """(container kind, JSON path, facets) for every facet container of an event."""
    yield "run.facets", ["run", "facets"], as_dict(as_dict(event.get("run")).get("facets"))
    yield "job.facets", ["job", "facets"], as_dict(as_dict(event.get("job")).get("facets"))
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for i, dataset in enumerate(as_list(event.get(side))):
            dataset = as_dict(dataset)
            for name in ("facets", extra):
                yield f"{side}[].{name}", [side, i, name], as_dict(dataset.get(name))


def check_facets(schemas: Schemas, report: Report, line: int, event: dict) -> int:
    """Validates every facet of an event against its local schema; returns how many."""
    validated = 0
    for kind, prefix, facets in facet_containers(event):
        for key, facet in facets.items():
            path = prefix + [key]
            where = json_path(path)
            if not isinstance(facet, dict) or not isinstance(facet.get("_schemaURL"), str):
                continue  # reported by the RunEvent validation (BaseFacet requires _schemaURL)
            url = facet["_schemaURL"]
            schema_id, _, fragment = url.partition("#")
            schema = schemas.facets.get(schema_id)
            if schema is None:
                report.error(
                    line,
                    f"{where}: _schemaURL {url} is not one of the local facet schemas "
                    f"in {schemas.directory / FACETS_DIR}",
                )
                continue
            expected_fragment = f"/$defs/{schema.definition}"
            if fragment and fragment != expected_fragment:
                report.error(
                    line,
                    f"{where}: _schemaURL fragment #{fragment} should be #{expected_fragment}",
                )
            if key != schema.key:
                report.error(
                    line,
                    f"{where}: facet key {key!r} does not match its schema "
                    f"({schema.file.name} declares {schema.key!r})",
                )
            allowed = ALLOWED_CONTAINERS[schema.base]
            if kind not in allowed:
                report.error(
                    line,
                    f"{where}: {schema.definition} extends {schema.base} and belongs in "
                    f"{' or '.join(allowed)}, not {kind}",
                )
            validator = schemas.facet_validators[schema_id]
            report.schema_errors(line, path, validator.iter_errors(facet))
            validated += 1
    return validated


def check_column_lineage(report: Report, line: int, event: dict) -> None:
    inputs = {dataset_id(d): d for d in as_list(event.get("inputs")) if isinstance(d, dict)}
    for i, output in enumerate(as_list(event.get("outputs"))):
        output = as_dict(output)
        lineage = as_dict(output.get("facets")).get("columnLineage")
        if not isinstance(lineage, dict):
            continue
        where = json_path(["outputs", i, "facets", "columnLineage"])
        fields = as_dict(lineage.get("fields"))

        names = schema_field_names(output)
        if names is not None and set(fields) != set(names):
            problems = []
            if extra := sorted(set(fields) - set(names)):
                problems.append(f"not in the schema facet: {', '.join(extra)}")
            if missing := sorted(n for n in set(names) - set(fields) if isinstance(n, str)):
                problems.append(f"schema fields without lineage: {', '.join(missing)}")
            report.error(line, f"{where}.fields: keys differ from the schema facet's fields ("
                         + "; ".join(problems) + ")")

        # Every input field that the lineage names, grouped by the problem found with it.
        references = [
            (f"fields.{column}.inputFields[{j}]", as_dict(ref))
            for column, entry in fields.items()
            for j, ref in enumerate(as_list(as_dict(entry).get("inputFields")))
        ] + [(f"dataset[{j}]", as_dict(ref)) for j, ref in enumerate(as_list(lineage.get("dataset")))]
        not_inputs: dict[str, list[str]] = {}
        unknown_fields: dict[str, list[str]] = {}
        for ref_where, ref in references:
            source = inputs.get(dataset_id(ref))
            if source is None:
                not_inputs.setdefault(describe_dataset(ref), []).append(ref_where)
                continue
            source_names = schema_field_names(source)
            # A nested field is written `column.field`: its column must be in the schema.
            column = str(ref.get("field", "")).split(".")[0]
            if source_names is not None and column not in source_names:
                key = f"{ref.get('field')!r} of {describe_dataset(ref)}"
                unknown_fields.setdefault(key, []).append(ref_where)
        for dataset, places in not_inputs.items():
            report.error(line, f"{where}: {dataset} is not among the event's inputs "
                         f"(referenced at {', '.join(places)})")
        for input_field, places in unknown_fields.items():
            report.error(line, f"{where}: field {input_field} is not in that input's schema "
                         f"facet (referenced at {', '.join(places)})")


def check_schema_url(schemas: Schemas, report: Report, line: int, event: dict) -> None:
    url = event.get("schemaURL")
    if not isinstance(url, str):
        return  # reported by the RunEvent validation
    schema_id, _, fragment = url.partition("#")
    expected = f"{schemas.core_id}#/$defs/{RUN_EVENT_DEF}"
    if schema_id != schemas.core_id or fragment not in ("", f"/$defs/{RUN_EVENT_DEF}"):
        report.error(line, f"$.schemaURL: {url} is not the local core schema's RunEvent ({expected})")


# --------------------------------------------------------------------------------------------
# Per-run checks


@dataclass
class RunEvents:
    job: tuple[Any, Any]
    job_line: int
    events: list[tuple[int, str]] = field(default_factory=list)  # (line, eventType)


def check_runs(report: Report, runs: dict[str, RunEvents]) -> None:
    for run_id, run in runs.items():
        started = ended = None  # (line, eventType) of the START and of the terminal event
        for line, event_type in run.events:
            if event_type == "START":
                if started or ended:
                    report.error(line, f"run {run_id}: START after the run "
                                 f"{'ended' if ended else 'started'} "
                                 f"(line {(ended or started)[0]})")
                else:
                    started = (line, event_type)
            elif event_type in TERMINAL_EVENT_TYPES:
                if ended:
                    report.error(line, f"run {run_id}: second end event {event_type} "
                                 f"(already ended with {ended[1]} at line {ended[0]})")
                elif not started:
                    report.error(line, f"run {run_id}: {event_type} without a START before it")
                    ended = (line, event_type)
                else:
                    ended = (line, event_type)
            elif event_type == "RUNNING" and (not started or ended):
                report.error(line, f"run {run_id}: RUNNING outside START .. end of the run")
        if started and not ended:
            report.error(started[0], f"run {run_id}: no COMPLETE, FAIL or ABORT after its START")
        elif not started and not ended:
            report.error(run.events[0][0], f"run {run_id}: no START event")


# --------------------------------------------------------------------------------------------


def validate(path: Path, schemas: Schemas, expect_complete: int | None) -> int:
    report = Report(str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SetupError(f"{path}: cannot read: {e}") from e

    events = facets = complete_with_lineage = 0
    runs: dict[str, RunEvents] = {}
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        events += 1
        try:
            event = json.loads(text)
        except ValueError as e:
            report.error(line, f"not JSON: {e}")
            continue
        if not isinstance(event, dict):
            report.error(line, "not a JSON object")
            continue

        report.schema_errors(line, [], schemas.run_event.iter_errors(event))
        check_schema_url(schemas, report, line, event)
        facets += check_facets(schemas, report, line, event)
        check_column_lineage(report, line, event)

        event_type = event.get("eventType")
        if event_type is None:
            report.error(line, "$.eventType: missing (needed to follow the run's lifecycle)")
        run_id = as_dict(event.get("run")).get("runId")
        job = as_dict(event.get("job"))
        if isinstance(run_id, str) and event_type in EVENT_TYPES:
            job_id = dataset_id(job)
            run = runs.setdefault(run_id, RunEvents(job_id, line))
            if job_id != run.job:
                report.error(line, f"run {run_id}: job {job_id[0]}/{job_id[1]} differs from "
                             f"{run.job[0]}/{run.job[1]} at line {run.job_line}")
            run.events.append((line, event_type))
        if event_type == "COMPLETE" and any(
            isinstance(as_dict(as_dict(o).get("facets")).get("columnLineage"), dict)
            for o in as_list(event.get("outputs"))
        ):
            complete_with_lineage += 1

    check_runs(report, runs)
    if events == 0:
        report.error(0, "no events")
    if expect_complete is not None and complete_with_lineage < expect_complete:
        report.error(0, f"expected at least {expect_complete} COMPLETE event(s) with a "
                     f"columnLineage facet on an output, found {complete_with_lineage}")

    if report.errors:
        report.print()
        print(f"{path}: {len(report.errors)} error(s)", file=sys.stderr)
        return 1
    print(
        f"{path}: OK: {events} events, {len(runs)} runs, {facets} facets validated "
        f"({complete_with_lineage} COMPLETE with column lineage; schemas: {schemas.directory})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate OpenLineage run events (NDJSON) against the official JSON Schemas."
    )
    parser.add_argument("events", type=Path, help="file with one OpenLineage RunEvent per line")
    parser.add_argument("--schemas", help=f"schema folder (default: ${SCHEMAS_ENV}, "
                        "then <repo>/../shared/openlineage, then /work/shared/openlineage)")
    parser.add_argument("--expect-complete", type=int, metavar="N",
                        help="require at least N COMPLETE events with column lineage on an output")
    args = parser.parse_args(argv)
    if args.expect_complete is not None and args.expect_complete < 0:
        parser.error("--expect-complete must not be negative")
    try:
        schemas = load_schemas(resolve_schema_dir(args.schemas))
        return validate(args.events, schemas, args.expect_complete)
    except SetupError as e:
        print(f"validate_openlineage: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
