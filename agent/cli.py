"""edge-agent command line: run the agent, validate configs, drive the local API, diagnose."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__

DEFAULT_PROJECT = "default"
EX_CONFIG = 78
STATUS_INTERVAL_S = 10.0


def _load(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from agent.settings import load_settings

    try:
        return load_settings(args.config)
    except FileNotFoundError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        print(f"edge-agent: invalid configuration at {where}: {first['msg']}", file=sys.stderr)
    # EX_CONFIG: the unit's RestartPreventExitStatus=78 stops systemd from restarting into the same error
    raise SystemExit(EX_CONFIG)


def _read_json_arg(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


# run ---------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    import faulthandler

    from agent.logging_setup import configure_logging
    from agent.runtime import sdnotify
    from agent.runtime.app import AgentRuntime

    settings = _load(args)
    configure_logging(settings.log.level, settings.log.format)
    faulthandler.enable()  # a watchdog kill (SIGABRT) leaves every thread's stack in the journal
    runtime = AgentRuntime(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runtime.start()
    try:
        while not stop.wait(STATUS_INTERVAL_S):
            sdnotify.status(runtime.status_line())
    finally:
        runtime.stop()
    return 0


# validate ------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from agent.control.payload import decode_json
    from agent.tasks.errors import ApiError
    from agent.tasks.model import parse_create

    try:
        spec = parse_create(decode_json(_read_json_arg(args.file)))
        if args.service_name:
            from agent.runtime.checks import static_checks

            for check in static_checks(_load(args)):
                check(spec, args.service_name)
    except ApiError as exc:
        print(json.dumps(exc.body(), indent=2))
        return 1
    except OSError as exc:
        print(f"edge-agent: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"valid: task {spec.name!r} with {len(spec.input.data)} {spec.input.type} input(s)")
    return 0


# task (client of the local API) ----------------------------------------------------------------
class ApiClient:
    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        from agent.api_token import api_token

        settings = _load(args)
        host = settings.api.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        token = api_token(settings, create=False)
        if token is None:
            raise SystemExit("edge-agent: no API token: set api.token or api.token_file, or start the agent once")
        self.project = args.project
        self.client = httpx.Client(base_url=f"http://{host}:{settings.api.port}",
                                   headers={"X-Auth-Token": token}, timeout=30.0)

    def call(self, method: str, path: str, body: bytes | None = None, params: dict[str, Any] | None = None) -> int:
        import httpx

        try:
            response = self.client.request(method, f"/v2/{self.project}{path}", content=body, params=params,
                                           headers={"Content-Type": "application/json"} if body else None)
        except httpx.HTTPError as exc:
            print(f"edge-agent: cannot reach the agent's API: {exc}", file=sys.stderr)
            return 2
        if response.content:
            try:
                print(json.dumps(response.json(), indent=2, ensure_ascii=False))
            except ValueError:
                print(response.text)
        return 0 if response.status_code == 200 else 1


def cmd_task(args: argparse.Namespace) -> int:
    client = ApiClient(args)
    op = args.task_op
    if op == "create":
        body = _read_json_arg(args.file) if args.file else b"{}"
        params = {"template": args.template} if args.template else None
        return client.call("POST", f"/services/{args.service_name}/tasks", body, params)
    if op == "list":
        params = {k: v for k, v in {"task_state": args.state, "task_name": args.name, "page": args.page,
                                    "page_size": args.page_size}.items() if v is not None}
        return client.call("GET", "/tasks", params=params)
    if op == "show":
        return client.call("GET", f"/tasks/{args.task_id}")
    if op == "update":
        return client.call("PUT", f"/tasks/{args.task_id}", _read_json_arg(args.file))
    if op == "delete":
        return client.call("DELETE", f"/tasks/{args.task_id}")
    return client.call("PUT", f"/tasks/{args.task_id}/action/{op}")


# demo, diag, algorithms ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(seconds=args.seconds, keep=args.keep, output=args.output))


def cmd_diag(args: argparse.Namespace) -> int:
    from agent.diag import DiagOptions, run_diag

    return run_diag(DiagOptions(config=args.config, as_json=args.json, url=args.url, timeout_s=args.timeout,
                                sample_s=args.sample, project=args.project))


def cmd_algorithms(args: argparse.Namespace) -> int:
    from agent.algorithms.registry import describe_installed

    described = describe_installed()
    if args.json:
        print(json.dumps(described, indent=2, ensure_ascii=False))
        return 0
    for algorithm in described:
        print(f"{algorithm['service_name']}  versions {', '.join(algorithm['versions'])}  "
              f"event_type {algorithm['event_type']}  default fps {algorithm['fps']}")
        if algorithm["summary"]:
            print(f"  {algorithm['summary']}")
        if algorithm["data_categories"]:
            print(f"  images on request (data_category): {', '.join(algorithm['data_categories'])}")
        schema = algorithm["config_schema"]
        print("  config.common:")
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type") or " | ".join(str(o.get("type", "?")) for o in prop.get("anyOf", [])) or "object"
            default = f" = {json.dumps(prop['default'])}" if "default" in prop else ""
            print(f"    {name} ({kind}){default}: {prop.get('description', '')}")
        print()
    return 0


def cmd_version(_: argparse.Namespace) -> int:
    print(f"edge-agent {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Edge video-analysis agent.")
    parser.add_argument("--config", help="agent TOML config (default: $EDGE_AGENT_CONFIG)")
    # --config is also taken after any command (`edge-agent run --config X`, as the systemd unit writes it);
    # SUPPRESS keeps a later absence from overwriting a --config given before the command.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", default=argparse.SUPPRESS,
                        help="agent TOML config (also accepted before the command)")
    commands = _Subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), config)

    run = commands.add_parser("run", help="run the agent (the systemd service's job)")
    run.set_defaults(func=cmd_run)

    validate = commands.add_parser("validate", help="check a create-task body; exit 0 when valid")
    validate.add_argument("file", help="JSON file, or - for standard input")
    validate.add_argument("--service-name", help="also check the algorithm service and its config.common")
    validate.set_defaults(func=cmd_validate)

    task = commands.add_parser("task", help="manage tasks through the running agent's local API")
    task.add_argument("--project", default=DEFAULT_PROJECT, help="project id (default: %(default)s)")
    ops = _Subcommands(task.add_subparsers(dest="task_op", required=True, metavar="OP"), config)
    create = ops.add_parser("create", help="create a task from a JSON body")
    create.add_argument("--service-name", required=True, help="algorithm service, e.g. intrusion-detection")
    create.add_argument("--template", help="start from a saved template; the body overrides its fields")
    create.add_argument("file", nargs="?", help="JSON body file, or - for standard input")
    listing = ops.add_parser("list", help="list tasks")
    listing.add_argument("--state", help="only tasks in this state, e.g. RUNNING")
    listing.add_argument("--name", help="only tasks whose name contains this")
    listing.add_argument("--page", type=int)
    listing.add_argument("--page-size", type=int)
    for name, text in (("show", "show one task"), ("delete", "delete a task"), ("start", "start a task"),
                       ("stop", "stop a task")):
        op = ops.add_parser(name, help=text)
        op.add_argument("task_id")
    update = ops.add_parser("update", help="update a task from a JSON body")
    update.add_argument("task_id")
    update.add_argument("file", help="JSON body file, or - for standard input")
    task.set_defaults(func=cmd_task)

    demo = commands.add_parser("demo", help="run a synthetic camera through the whole agent, print the events")
    demo.add_argument("--seconds", type=float, default=12.0, help="length of the scene (default: %(default)s)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    demo.add_argument("--output", type=Path, help="folder for the annotated event JPEG (default: a temp folder)")
    demo.set_defaults(func=cmd_demo)

    diag = commands.add_parser("diag", help="check config, state, broker, API, every input and sink; "
                                            "exit 1 when something FAILs")
    diag.add_argument("--json", action="store_true", help="machine-readable report")
    diag.add_argument("--url", help="probe this one stream (rtsp://…, http://…, a file) instead of the tasks")
    diag.add_argument("--timeout", type=float, default=5.0, help="seconds per network check (default: %(default)s)")
    diag.add_argument("--sample", type=float, default=5.0,
                      help="seconds of decoding per stream probe (default: %(default)s)")
    diag.add_argument("--project", default=DEFAULT_PROJECT, help="project id used for the API check")
    diag.set_defaults(func=cmd_diag)

    algorithms = commands.add_parser("algorithms", help="list installed algorithms, versions, config.common")
    algorithms.add_argument("--json", action="store_true", help="machine-readable, with the JSON schemas")
    algorithms.set_defaults(func=cmd_algorithms)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


class _Subcommands:
    """Adds sub-commands that all take the shared ``--config`` option."""

    def __init__(self, actions: Any, shared: argparse.ArgumentParser) -> None:
        self._actions = actions
        self._shared = shared

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._actions.add_parser(name, parents=[self._shared], **kwargs)
        return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
