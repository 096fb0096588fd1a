"""The submit command sends the compiled pipeline to Vertex AI Pipelines.

A stand-in HTTP server on 127.0.0.1 plays both the Vertex AI REST API and
Cloud Storage, and records every request it gets; sockets to any other
address are refused, so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform import initializer

from kubeflow import vertex
from kubeflow.runner import compile_pipeline
from pipeline.config import PipelineConfig

PROJECT = "test-project"
PROJECT_NUMBER = "123456789"
REGION = "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
RUN_ROOT = "gs://runs-bucket/freshtower"
SERVICE_ACCOUNT = f"pipelines@{PROJECT}.iam.gserviceaccount.com"
CRON = "TZ=Europe/Paris 0 3 * * *"


@dataclasses.dataclass
class Request:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class StandIn:
    """Records requests and answers them as Vertex AI and GCS would."""

    def __init__(self):
        self.requests: list[Request] = []
        self.project_lookups: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                stand_in.handle(self)

            def do_POST(self):
                stand_in.handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, daemon=True
        )

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        request = Request(
            method=handler.command,
            path=url.path,
            query=parse_qs(url.query),
            body=json.loads(raw) if raw else None,
        )
        self.requests.append(request)
        status, answer = self.answer(request)
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, request: Request) -> tuple[int, dict]:
        path = request.path
        if request.method == "POST" and path.endswith("/pipelineJobs"):
            job_id = request.query["pipelineJobId"][0]
            name = f"{path.removeprefix('/v1/')}/{job_id}"
            return 200, {
                **request.body,
                "name": name,
                "state": "PIPELINE_STATE_PENDING",
            }
        if request.method == "POST" and path.endswith("/schedules"):
            name = f"{path.removeprefix('/v1/')}/4242"
            return 200, {**request.body, "name": name, "state": "ACTIVE"}
        if request.method == "GET" and path.startswith("/storage/v1/b/"):
            bucket = path.split("/")[4]
            return 200, {
                "kind": "storage#bucket",
                "id": bucket,
                "name": bucket,
                "projectNumber": PROJECT_NUMBER,
                "location": REGION.upper(),
            }
        return 404, {"error": {"code": 404, "message": "not a stand-in path"}}

    def posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> str:
    config = PipelineConfig(
        data_root="gs://b/data",
        pipeline_root="gs://b/root",
        serving_root="gs://b/serving",
    )
    output = tmp_path_factory.mktemp("compiled") / "pipeline.json"
    return compile_pipeline(config, "freshtower:test", str(output))


@pytest.fixture
def compiled(template) -> dict:
    with open(template) as f:
        return json.load(f)


@pytest.fixture
def stand_in(monkeypatch):
    from google.cloud.aiplatform.utils import resource_manager_utils

    server = StandIn()
    server.thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)

    # The SDK checks that the pipeline root's bucket belongs to the
    # project by asking Cloud Resource Manager, over gRPC, for the
    # project's number; answer here instead.
    def project_number(project_id, credentials=None):
        server.project_lookups.append(project_id)
        return PROJECT_NUMBER

    monkeypatch.setattr(
        resource_manager_utils, "get_project_number", project_number
    )

    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        family = sock.family
        if family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
        ):
            raise OSError(f"test tried to reach {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield server
    server.server.shutdown()
    server.server.server_close()


def declared(compiled: dict) -> set[str]:
    return set(
        compiled["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    )


def submit(template: str, stand_in: StandIn, **kw) -> dict:
    kw = {
        "project": PROJECT,
        "region": REGION,
        "pipeline_root": RUN_ROOT,
        "service_account": SERVICE_ACCOUNT,
        "parameters": {"replay_ratio": 0.5},
        "labels": {"team": "reco", "span": "42"},
        "api_endpoint": stand_in.endpoint,
        "credentials": AnonymousCredentials(),
        **kw,
    }
    return vertex.submit_pipeline(template, **kw)


def test_the_template_declares_replay_ratio(compiled):
    assert "replay_ratio" in declared(compiled)


def test_submit_sends_one_create_pipeline_job_request(
    template, compiled, stand_in
):
    result = submit(template, stand_in)

    (create,) = stand_in.posts()
    assert create.path == f"/v1/{PARENT}/pipelineJobs"
    job_id = create.query["pipelineJobId"][0]
    job = create.body
    assert job["pipelineSpec"] == compiled["pipelineSpec"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == RUN_ROOT
    assert job["runtimeConfig"]["parameterValues"] == {
        **compiled["runtimeConfig"].get("parameterValues", {}),
        "replay_ratio": 0.5,
    }
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["labels"] == {
        **compiled["labels"],
        "team": "reco",
        "span": "42",
    }
    assert job["displayName"] == compiled["displayName"]
    # The only other calls read the pipeline root's bucket: the SDK
    # checks it exists and belongs to the project.
    others = [r for r in stand_in.requests if r is not create]
    assert {(r.method, r.path) for r in others} == {
        ("GET", "/storage/v1/b/runs-bucket")
    }
    assert stand_in.project_lookups == [PROJECT]
    # aiplatform.init's process-wide settings are put back afterwards.
    assert initializer.global_config.api_endpoint is None
    assert result == {
        "parent": PARENT,
        "pipelineJobId": job_id,
        "pipelineJob": job,
        "name": f"{PARENT}/pipelineJobs/{job_id}",
    }


def test_dry_run_sends_nothing_and_returns_the_same_request(
    template, stand_in, monkeypatch, tmp_path, capsys
):
    # A dry run needs no credentials: pointing the application default
    # credentials at a missing file would fail any attempt to load them.
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json")
    )

    dry = submit(template, stand_in, dry_run=True, credentials=None)

    assert stand_in.requests == []
    assert stand_in.project_lookups == []
    assert "name" not in dry
    assert json.loads(json.dumps(dry)) == dry

    sent = submit(template, stand_in)

    (create,) = stand_in.posts()
    assert dry["parent"] == sent["parent"] == PARENT
    assert dry["pipelineJob"] == create.body


def test_schedule_sends_one_create_schedule_request(
    template, compiled, stand_in
):
    result = submit(
        template,
        stand_in,
        schedule=CRON,
        parameters={"replay_ratio": 0.25},
        display_name="freshtower-nightly",
    )

    (create,) = stand_in.posts()
    assert create.path == f"/v1/{PARENT}/schedules"
    schedule = create.body
    assert schedule["cron"] == CRON
    assert schedule["displayName"] == "freshtower-nightly"
    job_request = schedule["createPipelineJobRequest"]
    assert job_request["parent"] == PARENT
    job = job_request["pipelineJob"]
    assert job["pipelineSpec"] == compiled["pipelineSpec"]
    assert job["runtimeConfig"]["parameterValues"]["replay_ratio"] == 0.25
    assert job["runtimeConfig"]["gcsOutputDirectory"] == RUN_ROOT
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["labels"]["team"] == "reco"
    assert result["schedule"] == schedule
    assert result["name"] == f"{PARENT}/schedules/4242"

    dry = submit(
        template,
        stand_in,
        schedule=CRON,
        parameters={"replay_ratio": 0.25},
        display_name="freshtower-nightly",
        dry_run=True,
    )
    assert dry["schedule"] == schedule
    assert len(stand_in.requests) == 1


def test_an_unknown_parameter_fails_before_anything_is_sent(
    template, compiled, stand_in
):
    with pytest.raises(vertex.SubmitError) as error:
        submit(template, stand_in, parameters={"replay_rate": 0.5})

    message = str(error.value)
    assert "replay_rate" in message
    for name in declared(compiled):
        assert name in message
    assert stand_in.requests == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"parameters": {"replay_ratio": "high"}}, "takes a number"),
        ({"pipeline_root": "/tmp/root"}, "gs://"),
        ({"pipeline_root": "gs:///root"}, "no bucket"),
        ({"labels": {"Team": "reco"}}, "start with a lowercase letter"),
        ({"labels": {"team": "Reco"}}, "lowercase letters"),
        ({"labels": {"team": "x" * 65}}, "longer than 64"),
        (
            {"labels": {"vertex-ai-pipelines-run-billing-id": "1"}},
            "reserved",
        ),
        ({"schedule": "every night"}, "cron expression"),
        ({"region": "mars-north1"}, "no region"),
        ({"project": ""}, "project is required"),
    ],
)
def test_invalid_inputs_fail_clearly_before_anything_is_sent(
    template, stand_in, change, match
):
    with pytest.raises(vertex.SubmitError, match=match):
        submit(template, stand_in, **change)

    assert stand_in.requests == []


def test_a_parameter_without_a_value_fails_before_anything_is_sent(
    compiled, tmp_path, stand_in
):
    compiled["runtimeConfig"].pop("parameterValues", None)
    template = tmp_path / "pipeline.json"
    template.write_text(json.dumps(compiled))

    with pytest.raises(vertex.SubmitError, match="replay_ratio have no value"):
        submit(str(template), stand_in, parameters={})

    assert stand_in.requests == []


def test_a_missing_template_fails_clearly(tmp_path, stand_in):
    missing = str(tmp_path / "pipeline.json")

    with pytest.raises(FileNotFoundError, match="compile the pipeline"):
        submit(missing, stand_in)

    assert stand_in.requests == []


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="freshtower-kubeflow")
    commands = parser.add_subparsers(dest="command", required=True)
    vertex.register(commands)
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_cli_dry_run_prints_the_request(
    template, compiled, stand_in, capsys
):
    status = cli(
        [
            "submit",
            "--template",
            template,
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--pipeline-root",
            RUN_ROOT,
            "--service-account",
            SERVICE_ACCOUNT,
            "--param",
            "replay_ratio=0.5",
            "--label",
            "team=reco",
            "--dry-run",
            "--api-endpoint",
            stand_in.endpoint,
        ]
    )

    assert status == 0
    request = json.loads(capsys.readouterr().out)
    assert request["parent"] == PARENT
    job = request["pipelineJob"]
    assert job["pipelineSpec"] == compiled["pipelineSpec"]
    assert job["runtimeConfig"]["parameterValues"]["replay_ratio"] == 0.5
    assert job["runtimeConfig"]["gcsOutputDirectory"] == RUN_ROOT
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["labels"]["team"] == "reco"
    assert stand_in.requests == []


def test_the_cli_takes_the_template_root_and_can_turn_caching_off(
    template, compiled, stand_in, capsys
):
    status = cli(
        [
            "submit",
            "--template",
            template,
            "--project",
            PROJECT,
            "--no-cache",
            "--dry-run",
        ]
    )

    assert status == 0
    job = json.loads(capsys.readouterr().out)["pipelineJob"]
    root = compiled["runtimeConfig"]["gcsOutputDirectory"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == root
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks
    for task in tasks.values():
        assert task["cachingOptions"] == {"enableCache": False}
    assert stand_in.requests == []


def test_the_cli_reports_a_bad_parameter_value(template, stand_in, capsys):
    status = cli(
        [
            "submit",
            "--template",
            template,
            "--project",
            PROJECT,
            "--param",
            "replay_ratio=high",
            "--api-endpoint",
            stand_in.endpoint,
        ]
    )

    assert status == 2
    assert "replay_ratio takes a number" in capsys.readouterr().err
    assert stand_in.requests == []
