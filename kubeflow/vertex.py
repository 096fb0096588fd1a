"""Submit a compiled pipeline to Vertex AI Pipelines.

The template is the JSON file that KubeflowV2DagRunner writes: a
PipelineJob with a `pipelineSpec`, a `displayName`, `labels` and a
`runtimeConfig`. `submit_pipeline` turns it into a Vertex AI PipelineJob
with this run's parameter values, labels, pipeline root and service
account, and then either starts one run, creates a cron schedule, or, on
a dry run, only returns the request it would send.

google-cloud-aiplatform is imported inside the functions that need it:
it takes seconds to import, and the other commands of the CLI do not
need it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = ["SubmitError", "register", "submit_pipeline"]

# Vertex AI sets this label itself and overwrites any value given.
_RESERVED_LABEL = "vertex-ai-pipelines-run-billing-id"
_MAX_LABELS = 64
_MAX_LABEL_LENGTH = 64
# Runs of one schedule that may be in flight at once.
_MAX_CONCURRENT_SCHEDULED_RUNS = 1

# The Python types a runtime parameter of each declared type accepts.
# Schema 2.0.0, which TFX writes by default, declares "type"; later
# schemas declare "parameterType".
_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "INT": (int,),
    "DOUBLE": (int, float),
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}
_TYPE_NAMES = {
    "INT": "an integer",
    "NUMBER_INTEGER": "an integer",
    "DOUBLE": "a number",
    "NUMBER_DOUBLE": "a number",
    "STRING": "a string",
    "BOOLEAN": "true or false",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}


class SubmitError(ValueError):
    """A submission that Vertex AI would reject, caught before sending."""


def submit_pipeline(
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    service_account: str | None = None,
    parameters: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    schedule: str | None = None,
    display_name: str | None = None,
    enable_caching: bool | None = None,
    dry_run: bool = False,
    api_endpoint: str | None = None,
    credentials: Credentials | None = None,
) -> dict[str, Any]:
    """Starts a run of a compiled pipeline on Vertex AI, or schedules it.

    Args:
      template_path: the JSON file KubeflowV2DagRunner wrote.
      project: the Google Cloud project to run in.
      region: the Vertex AI region, such as "us-central1".
      pipeline_root: the gs:// folder the run writes its artifacts to.
      service_account: the account the run's steps act as; `None` lets
        Vertex AI use the project's default compute account.
      parameters: values of the runtime parameters the template
        declares, by name; they override the template's own values.
      labels: labels of the run, merged onto the template's labels.
      schedule: a cron expression, optionally prefixed with
        "TZ=<zone> "; with one, a schedule is created instead of a run.
      display_name: the run's (and schedule's) name in the console;
        defaults to the template's display name.
      enable_caching: `True` or `False` turns the reuse of earlier
        outputs on or off for every step; `None` keeps what the template
        says.
      dry_run: build the request and return it without sending anything.
      api_endpoint: the Vertex AI API host, for a private endpoint or a
        stand-in; "http://host:port" talks plain HTTP. `None` uses the
        region's public endpoint.
      credentials: google.auth credentials; `None` uses Google's
        application default credentials (google.auth.default). A dry run
        needs none.

    Returns:
      The create request as JSON-ready data: "parent", and either
      "pipelineJobId" and "pipelineJob" for a run, or "pipelineJob" and
      "schedule" for a schedule. Unless `dry_run`, "name" holds the
      resource name of the created run or schedule.

    Raises:
      FileNotFoundError: the template does not exist.
      SubmitError: an input Vertex AI would reject.
    """
    template = _load_template(template_path)
    _check_pipeline_root(pipeline_root)
    if not project:
        raise SubmitError("A Google Cloud project is required.")
    if schedule is not None:
        _check_cron(schedule)
    values = dict(parameters or {})
    _check_parameters(template, values)
    merged_labels = {**template.get("labels", {}), **(labels or {})}
    _check_labels(merged_labels)
    display_name = (
        display_name
        or template.get("displayName")
        or template["pipelineSpec"]["pipelineInfo"]["name"]
    )
    if len(display_name) > 128:
        raise SubmitError(
            f"The display name is {len(display_name)} characters long; "
            "Vertex AI takes at most 128."
        )
    if dry_run and credentials is None:
        # Nothing is sent, so nothing needs to be signed: a dry run works
        # on a machine without Google credentials.
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()

    from google.cloud import aiplatform
    from google.cloud.aiplatform import utils as aiplatform_utils

    try:
        aiplatform_utils.validate_region(region)
    except ValueError as error:
        raise SubmitError(
            f"Vertex AI has no region {region!r}, such as us-central1 or "
            "europe-west4."
        ) from error
    with _aiplatform_settings():
        aiplatform.init(
            project=project,
            location=region,
            credentials=credentials,
            api_endpoint=api_endpoint,
            api_transport="rest",
        )
        job = aiplatform.PipelineJob(
            display_name=display_name,
            template_path=template_path,
            pipeline_root=pipeline_root,
            parameter_values=values,
            enable_caching=enable_caching,
            labels=merged_labels,
            project=project,
            location=region,
            credentials=credentials,
        )
        request = _create_request(
            job, project, region, service_account, schedule, display_name
        )
        if dry_run:
            return request
        if schedule is None:
            job.submit(service_account=service_account)
            request["name"] = job.resource_name
        else:
            created = job.create_schedule(
                cron=schedule,
                display_name=display_name,
                max_concurrent_run_count=_MAX_CONCURRENT_SCHEDULED_RUNS,
                service_account=service_account,
            )
            request["name"] = created.resource_name
    return request


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `submit` command to a CLI.

    Args:
      subparsers: what `ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "submit",
        help="start or schedule a compiled pipeline on Vertex AI Pipelines",
        description=(
            "Start a run of a compiled pipeline on Vertex AI Pipelines, or "
            "create a cron schedule of runs. Credentials come from Google's "
            "application default chain (gcloud auth application-default "
            "login, or GOOGLE_APPLICATION_CREDENTIALS)."
        ),
    )
    parser.add_argument(
        "--template",
        required=True,
        metavar="PATH",
        help="the pipeline JSON that `compile` wrote",
    )
    parser.add_argument(
        "--project",
        default=os.environ.get("GOOGLE_CLOUD_PROJECT"),
        help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)",
    )
    parser.add_argument(
        "--region",
        default="us-central1",
        help="Vertex AI region (default: %(default)s)",
    )
    parser.add_argument(
        "--pipeline-root",
        metavar="GS_URI",
        help="gs:// folder for the run's artifacts (default: the template's)",
    )
    parser.add_argument(
        "--service-account",
        help="service account the run acts as (default: Vertex AI's)",
    )
    parser.add_argument(
        "--schedule",
        metavar="CRON",
        help=(
            'create a schedule instead of one run, e.g. "0 3 * * *" or '
            '"TZ=Europe/Paris 0 3 * * *"'
        ),
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=_assignment,
        metavar="NAME=VALUE",
        help=(
            "a runtime parameter value, read as JSON when it parses and "
            "as text otherwise; repeatable"
        ),
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        type=_assignment,
        metavar="KEY=VALUE",
        help="a label of the run; repeatable",
    )
    parser.add_argument(
        "--display-name", help="name in the console (default: the template's)"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run every step again rather than reuse earlier outputs",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the request instead of sending it",
    )
    parser.add_argument(
        "--api-endpoint",
        metavar="HOST",
        help="Vertex AI API endpoint (default: the region's public one)",
    )
    parser.set_defaults(func=_run_submit)


def _run_submit(args: argparse.Namespace) -> int:
    """Runs the `submit` command; returns the exit status."""
    from google.api_core import exceptions as api_exceptions

    try:
        parameters = _parameter_values(args.template, args.param)
        labels = _label_values(args.label)
        pipeline_root = args.pipeline_root or _template_root(args.template)
        result = submit_pipeline(
            args.template,
            project=args.project or "",
            region=args.region,
            pipeline_root=pipeline_root,
            service_account=args.service_account,
            parameters=parameters,
            labels=labels,
            schedule=args.schedule,
            display_name=args.display_name,
            enable_caching=False if args.no_cache else None,
            dry_run=args.dry_run,
            api_endpoint=args.api_endpoint,
        )
    except (FileNotFoundError, SubmitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except api_exceptions.GoogleAPICallError as error:
        print(f"error: Vertex AI refused the request: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.schedule:
        print(f"Created schedule {result['name']} ({args.schedule}).")
    else:
        print(f"Submitted pipeline job {result['name']}.")
    return 0


def _assignment(text: str) -> tuple[str, str]:
    """Splits a NAME=VALUE command-line argument."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _parameter_values(
    template_path: str, pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Reads --param values: JSON when they parse, text otherwise.

    A parameter the template declares as a string always takes the text
    as given, so that `--param name=123` passes "123" and not 123.
    """
    types = _declared_types(_load_template(template_path)) if pairs else {}
    values: dict[str, Any] = {}
    for name, text in pairs:
        if name in values:
            raise SubmitError(f"--param {name} is given more than once.")
        if types.get(name) == "STRING":
            values[name] = text
            continue
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError:
            values[name] = text
    return values


def _label_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Turns --label pairs into a dict, refusing a key given twice."""
    labels: dict[str, str] = {}
    for key, value in pairs:
        if key in labels:
            raise SubmitError(f"--label {key} is given more than once.")
        labels[key] = value
    return labels


def _template_root(template_path: str) -> str:
    """The pipeline root a template was compiled with."""
    root = _load_template(template_path)["runtimeConfig"].get(
        "gcsOutputDirectory"
    )
    if not root:
        raise SubmitError(
            f"{template_path} names no pipeline root; pass --pipeline-root."
        )
    return root


def _load_template(template_path: str) -> dict[str, Any]:
    """Reads a compiled pipeline and checks it has what Vertex AI needs."""
    if not os.path.isfile(template_path):
        raise FileNotFoundError(
            f"No pipeline template at {template_path}; compile the pipeline "
            "first."
        )
    try:
        with open(template_path, encoding="utf-8") as f:
            template = json.load(f)
    except json.JSONDecodeError as error:
        raise SubmitError(
            f"{template_path} is not valid JSON: {error}"
        ) from error
    if not isinstance(template, dict) or not isinstance(
        template.get("pipelineSpec"), dict
    ):
        raise SubmitError(
            f"{template_path} is not a compiled pipeline job: it has no "
            "pipelineSpec."
        )
    template.setdefault("runtimeConfig", {})
    return template


def _definitions(template: Mapping[str, Any]) -> dict[str, dict]:
    """The definitions of a template's runtime parameters, by name."""
    return (
        template["pipelineSpec"]
        .get("root", {})
        .get("inputDefinitions", {})
        .get("parameters", {})
    )


def _declared_types(template: Mapping[str, Any]) -> dict[str, str]:
    """The declared type of each runtime parameter of a template."""
    return {
        name: spec.get("parameterType") or spec.get("type") or ""
        for name, spec in _definitions(template).items()
    }


def _check_parameters(
    template: Mapping[str, Any], values: Mapping[str, Any]
) -> None:
    """Checks runtime parameter values against the template's declarations.

    Every value must name a declared parameter and have its type, and
    every declared parameter must have a value, given here, in the
    template's runtime config, or as a default in its definition.
    """
    types = _declared_types(template)
    declared = ", ".join(sorted(types)) or "none"
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise SubmitError(
            f"Unknown runtime parameter(s) {', '.join(unknown)}; the "
            f"template declares: {declared}."
        )
    for name, value in values.items():
        accepted = _PARAMETER_TYPES.get(types[name])
        if accepted is None:
            continue
        # bool is a subclass of int, but Vertex AI does not take true for
        # a number.
        wrong_bool = isinstance(value, bool) and bool not in accepted
        if wrong_bool or not isinstance(value, accepted):
            raise SubmitError(
                f"Runtime parameter {name} takes "
                f"{_TYPE_NAMES[types[name]]}, got {value!r}."
            )
    runtime = template.get("runtimeConfig", {})
    preset = set(runtime.get("parameterValues", {})) | set(
        runtime.get("parameters", {})
    )
    definitions = _definitions(template)
    missing = sorted(
        name
        for name in types
        if values.get(name) is None
        and name not in preset
        and "defaultValue" not in definitions[name]
        and not definitions[name].get("isOptional")
    )
    if missing:
        raise SubmitError(
            f"Runtime parameter(s) {', '.join(missing)} have no value in the "
            "template; give one for each."
        )


def _check_pipeline_root(pipeline_root: str) -> None:
    """Vertex AI writes artifacts to Cloud Storage only."""
    if not pipeline_root or not pipeline_root.startswith("gs://"):
        raise SubmitError(
            f"The pipeline root must be a gs:// folder, got {pipeline_root!r}."
        )
    bucket = pipeline_root[len("gs://") :].split("/", 1)[0]
    if not bucket:
        raise SubmitError(
            f"The pipeline root {pipeline_root!r} names no bucket."
        )


def _check_labels(labels: Mapping[str, str]) -> None:
    """Applies Vertex AI's rules on label keys and values."""
    if len(labels) > _MAX_LABELS:
        raise SubmitError(
            f"{len(labels)} labels, counting the template's; Vertex AI takes "
            f"at most {_MAX_LABELS}."
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SubmitError(
                f"Label {key!r}: keys and values must be strings, got "
                f"{value!r}."
            )
        if key == _RESERVED_LABEL:
            raise SubmitError(
                f"Label {key} is reserved by Vertex AI Pipelines."
            )
        if not key or not _is_label_letter(key[0]):
            raise SubmitError(
                f"Label key {key!r} must start with a lowercase letter."
            )
        for kind, text in (("key", key), ("value", value)):
            if len(text) > _MAX_LABEL_LENGTH:
                raise SubmitError(
                    f"Label {kind} {text!r} is longer than "
                    f"{_MAX_LABEL_LENGTH} characters."
                )
            if not all(_is_label_char(c) for c in text):
                raise SubmitError(
                    f"Label {kind} {text!r} may hold only lowercase letters, "
                    "digits, '_' and '-'."
                )


def _is_label_letter(char: str) -> bool:
    """A lowercase letter; letters outside ASCII count too."""
    return char.isalpha() and char == char.lower()


def _is_label_char(char: str) -> bool:
    """A character allowed anywhere in a label key or value."""
    return _is_label_letter(char) or char.isdigit() or char in "_-"


def _check_cron(schedule: str) -> None:
    """A cron expression: five fields after an optional time zone."""
    fields = schedule.split()
    if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):
        fields = fields[1:]
    if len(fields) != 5:
        raise SubmitError(
            f"The schedule {schedule!r} is not a cron expression of five "
            'fields, such as "0 3 * * *" or "TZ=Europe/Paris 0 3 * * *".'
        )


def _create_request(
    job: Any,
    project: str,
    region: str,
    service_account: str | None,
    schedule: str | None,
    display_name: str,
) -> dict[str, Any]:
    """The create request for a job, as the REST API takes it.

    PipelineJob.submit and PipelineJobSchedule.create set the service
    account (and for a schedule, the cron and the cap on concurrent runs)
    just before sending; this adds them the same way.
    """
    parent = f"projects/{project}/locations/{region}"
    pipeline_job = job.to_dict()
    if service_account:
        pipeline_job["serviceAccount"] = service_account
    if schedule is None:
        return {
            "parent": parent,
            "pipelineJobId": job.job_id,
            "pipelineJob": pipeline_job,
        }
    # A schedule's runs get their own names; the schedule carries the
    # display name.
    scheduled_job = {
        key: value
        for key, value in pipeline_job.items()
        if key != "displayName"
    }
    return {
        "parent": parent,
        "pipelineJob": pipeline_job,
        "schedule": {
            "displayName": display_name,
            "cron": schedule,
            # The REST API writes 64-bit integers as strings.
            "maxConcurrentRunCount": str(_MAX_CONCURRENT_SCHEDULED_RUNS),
            "createPipelineJobRequest": {
                "parent": parent,
                "pipelineJob": scheduled_job,
            },
        },
    }


@contextlib.contextmanager
def _aiplatform_settings() -> Iterator[None]:
    """Restores google-cloud-aiplatform's process-wide settings on exit.

    aiplatform.init keeps the project, region, credentials and API
    endpoint in one process-wide object, and a later call with no
    endpoint would keep the earlier one. Putting the old settings back
    keeps one submission's endpoint and credentials out of the next.
    """
    from google.cloud.aiplatform import initializer

    saved = dict(vars(initializer.global_config))
    try:
        yield
    finally:
        vars(initializer.global_config).clear()
        vars(initializer.global_config).update(saved)
