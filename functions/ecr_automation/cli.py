"""``ecr-automation``: run the functions locally, simulate event flows, check rules, backfill the ledger.

Exit codes: 0 every event handled or deliberately ignored; 1 an event was rejected or a function
failed (one line per event on stderr); 2 usage error or unreadable file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from ecr_automation.errors import BUNDLED_RULES_FILE, ConfigurationError

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


class UsageError(Exception):
    pass


def _read_json(path: str) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from None


def _template(path: str) -> Any:
    from ecr_automation.local.template import SamTemplate, TemplateError  # noqa: PLC0415 - local extra

    try:
        return SamTemplate.load(Path(path))
    except TemplateError as error:
        raise UsageError(str(error)) from None


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for pair in args.env or []:
        name, separator, value = pair.partition("=")
        if not separator:
            raise UsageError(f"--env {pair!r}: expected NAME=VALUE")
        overrides[name] = value
    if getattr(args, "rules", None):
        overrides["RULES_FILE"] = str(Path(args.rules).resolve())
    if getattr(args, "dry_run", False):
        overrides["DRY_RUN"] = "true"
    return overrides


def cmd_invoke(args: argparse.Namespace, out: TextIO) -> int:
    from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415
    from ecr_automation.local.runner import (  # noqa: PLC0415
        LocalRunner,
        Resolver,
        names_only_resolver,
    )
    from ecr_automation.local.simulation import embedded_world  # noqa: PLC0415

    template = _template(args.template)
    if args.function not in template.functions():
        raise UsageError(
            f"no function {args.function!r} in {args.template}; there are: {', '.join(template.functions())}"
        )
    event = _read_json(args.event)
    overrides = _overrides(args)
    with contextlib.ExitStack() as stack:
        resolver: Resolver
        if args.embedded:
            world = stack.enter_context(embedded_world(template))
            world.apply(event)
            resolver = (world.reference, world.attribute)
        else:
            resolver = names_only_resolver(template)
        runner = LocalRunner(
            template, clients=AwsClients(), resolver=resolver, out=out, overrides=overrides, verbose=args.verbose
        )
        invocation = runner.invoke(args.function, event)
    out.write(
        json.dumps(
            {
                "kind": "invocation",
                "function": invocation.function,
                "status": invocation.status,
                "result": invocation.result,
            },
            default=str,
        )
        + "\n"
    )
    if invocation.status in {"rejected", "failed"}:
        print(f"{args.event}: {invocation.status}: {invocation.reason}", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def _simulation_input(path: str) -> object:
    """An event file as it is, or a scenario file loaded (recognised by its keys)."""
    from ecr_automation.local.scenario import ScenarioError, is_scenario, load_scenario  # noqa: PLC0415

    data = _read_json(path)
    if not is_scenario(data):
        return data
    try:
        return load_scenario(Path(path), data)
    except ScenarioError as error:
        raise UsageError(str(error)) from None


def _findings(path: str | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    data = _read_json(path)
    results = data if isinstance(data, list) else [data]
    if not all(isinstance(result, dict) and "imageScanFindings" in result for result in results):
        raise UsageError(f"{path}: expected DescribeImageScanFindings responses (with imageScanFindings)")
    return results  # type: ignore[return-value]


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from ecr_automation.local.simulation import run_simulation  # noqa: PLC0415

    template = _template(args.template)
    inputs = [(path, _simulation_input(path)) for path in args.events]
    errors, state = run_simulation(
        template,
        inputs,
        out,
        overrides=_overrides(args),
        findings=_findings(args.findings),
        bound=args.max_events,
        verbose=args.verbose,
    )
    out.write(json.dumps({"state": state}) + "\n")
    for error in errors:
        print(error, file=sys.stderr)
    return EXIT_REJECTED if errors else EXIT_OK


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    """The functions' own check (adapters/rules_source.py), whether the rules come from a file, AppConfig or SSM."""
    from ecr_automation.adapters.rules_source import document_version, rules_from_document  # noqa: PLC0415

    origin = "stdin" if args.file == "-" else args.file
    try:
        document = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    try:
        rules = rules_from_document(document, origin=origin)
    except ConfigurationError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return EXIT_REJECTED
    sections = {name: len(getattr(rules, name)) for name in type(rules).model_fields}
    counts = ", ".join(f"{count} {name} rule(s)" for name, count in sections.items())
    # The version is what the functions name in their logs ("rules updated", "rules version refused").
    out.write(f"ok: {origin}: {counts}; version {document_version(document)}\n")
    return EXIT_OK


def cmd_guard_backfill(args: argparse.Namespace, out: TextIO) -> int:
    from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415
    from ecr_automation.adapters.ecr import EcrRegistry  # noqa: PLC0415
    from ecr_automation.adapters.ledger import TagLedger  # noqa: PLC0415
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415
    from ecr_automation.local.runner import JsonLinesSink  # noqa: PLC0415
    from ecr_automation.logic.guard import backfill  # noqa: PLC0415
    from ecr_automation.models.domain import RepositoryRef  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    settings = settings_from_environment()
    table = args.table or settings.ledger_table
    if not table:
        raise UsageError("no ledger table: pass --table or set TAG_LEDGER_TABLE")
    rules = load_rules(Path(args.rules) if args.rules else settings.resolved_rules_file)
    clients = AwsClients()
    registry_id = args.registry_id or clients.client("sts", settings.region).get_caller_identity()["Account"]
    sink = JsonLinesSink(out, "guard-backfill", None)
    registry, ledger = EcrRegistry(clients, sink), TagLedger(clients, table, settings.region, sink)
    for name in args.repositories:
        report = backfill(RepositoryRef(registry_id, settings.region, name), rules.guard_for(name), registry, ledger)
        out.write(json.dumps({"kind": "backfill_report", **report.__dict__}) + "\n")
    return EXIT_OK


def cmd_guard_release(args: argparse.Namespace, out: TextIO) -> int:
    """Release a claim on purpose; the ledger records who, why and which digest held it."""
    from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415
    from ecr_automation.adapters.ledger import TagLedger  # noqa: PLC0415
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415
    from ecr_automation.local.runner import JsonLinesSink  # noqa: PLC0415
    from ecr_automation.logic.guard import release  # noqa: PLC0415
    from ecr_automation.models.domain import RepositoryRef  # noqa: PLC0415

    if not args.reason.strip():
        raise UsageError("--reason must say why the claim is released")
    settings = settings_from_environment()
    table = args.table or settings.ledger_table
    if not table:
        raise UsageError("no ledger table: pass --table or set TAG_LEDGER_TABLE")
    clients = AwsClients()
    identity = clients.client("sts", settings.region).get_caller_identity()
    registry_id = args.registry_id or identity["Account"]
    ledger = TagLedger(clients, table, settings.region, JsonLinesSink(out, "guard-release", None))
    repository = RepositoryRef(registry_id, settings.region, args.repository)
    previous = release(ledger, repository, args.tag, reason=args.reason, actor=identity["Arn"])
    if previous is None:
        print(f"{args.repository}:{args.tag} has no claim to release", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ecr_automation.local.demo import run_demo  # noqa: PLC0415

    return run_demo(_template(args.template), out)


def cmd_copy(args: argparse.Namespace, out: TextIO) -> int:
    """Copy one image (every platform, every digest preserved); one JSON report line, or the failing blob."""
    from ecr_automation.adapters.oci import (  # noqa: PLC0415 - no boto3 unless a registry is ECR
        Copier,
        CopyError,
        CopyInterrupted,
        Credentials,
        InvalidReferenceError,
        Reference,
        StaticCredentials,
    )

    try:
        source, destination = Reference.parse(args.source), Reference.parse(args.destination)
        source_credentials = StaticCredentials(Credentials.parse(args.src_creds)) if args.src_creds else None
        destination_credentials = StaticCredentials(Credentials.parse(args.dest_creds)) if args.dest_creds else None
    except (InvalidReferenceError, ValueError) as error:
        raise UsageError(str(error)) from None
    with Copier(
        source_credentials=source_credentials,
        destination_credentials=destination_credentials,
        insecure=args.insecure,
    ) as copier:
        try:
            report = copier.copy(source, destination, referrers=args.referrers)
        except (CopyError, CopyInterrupted) as error:
            print(f"copy {source} -> {destination}: {error}", file=sys.stderr)
            return EXIT_REJECTED
    out.write(json.dumps({"kind": "copy_report", **report.as_dict()}) + "\n")
    return EXIT_OK


def cmd_lifecycle_check(args: argparse.Namespace, out: TextIO) -> int:
    """Report what each repository's lifecycle policy would expire of its releases and alias targets; change nothing."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415
    from ecr_automation.adapters.lifecycle import PREVIEW_CLIENT_CONFIG, EcrLifecycle  # noqa: PLC0415
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415
    from ecr_automation.logic.lifecycle import LifecycleChecker, render_text  # noqa: PLC0415
    from ecr_automation.models.domain import RepositoryRef  # noqa: PLC0415
    from ecr_automation.models.lifecycle import LifecyclePolicyError, RepositoryNotFoundError  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    settings = settings_from_environment()
    rules = load_rules(Path(args.rules) if args.rules else settings.resolved_rules_file)
    clients = AwsClients()
    registry_id = args.registry_id or clients.client("sts", settings.region).get_caller_identity()["Account"]
    source = EcrLifecycle(
        clients, preview_clients=AwsClients(config=PREVIEW_CLIENT_CONFIG), preview_wait_seconds=args.preview_wait
    )
    checker = LifecycleChecker(rules, source, lambda: datetime.now(UTC), use_preview=not args.no_preview)
    names = args.repositories or sorted(source.repositories(registry_id, settings.region))
    code = EXIT_OK
    for name in names:
        repository = RepositoryRef(registry_id, settings.region, name)
        try:
            report = checker.check(repository)
        except RepositoryNotFoundError as error:
            print(f"{name}: {error}", file=sys.stderr)
            code = max(code, EXIT_USAGE)
            continue
        except LifecyclePolicyError as error:  # ECR accepted it, we cannot read it: nothing is proven safe
            print(f"{name}: cannot evaluate its lifecycle policy: {error}", file=sys.stderr)
            code = max(code, EXIT_REJECTED)
            continue
        if report is None:
            out.write(
                json.dumps({"kind": "lifecycle_report", "repository": name, "policy": None}) + "\n"
                if args.json
                else f"{name}: no lifecycle policy\n"
            )
            continue
        out.write(
            json.dumps({"kind": "lifecycle_report", **report.as_dict()}) + "\n" if args.json else render_text(report)
        )
        if report.violated:
            code = max(code, EXIT_REJECTED)
    return code


def _add_lifecycle_parser(commands: Any) -> None:
    lifecycle = commands.add_parser("lifecycle", help="lifecycle policy guardrails (read only)")
    lifecycle_commands = lifecycle.add_subparsers(dest="lifecycle_command", required=True)
    check = lifecycle_commands.add_parser(
        "check",
        help="report which protected tags and alias targets each lifecycle policy would expire, and a fix; "
        "exit 1 if any would be",
    )
    check.add_argument("repositories", nargs="*", metavar="REPO", help="default: every repository you can list")
    check.add_argument("--registry-id", help="registry (account) id (default: the caller's account)")
    check.add_argument("--rules", help="rules file (default: the bundled one)")
    check.add_argument("--json", action="store_true", help="one JSON report per line instead of text")
    check.add_argument("--no-preview", action="store_true", help="skip ECR's lifecycle policy preview")
    check.add_argument(
        "--preview-wait", type=float, default=60.0, metavar="SECONDS", help="how long to wait for ECR's preview"
    )
    check.set_defaults(run=cmd_lifecycle_check)


def _add_copy_parser(commands: Any) -> None:
    copy = commands.add_parser("copy", help="copy an image between registries, every digest preserved")
    copy.add_argument("source", help="[docker://]HOST/REPOSITORY[:TAG][@sha256:...]")
    copy.add_argument("destination", help="[docker://]HOST/REPOSITORY[:TAG] (default tag: the source's)")
    copy.add_argument("--insecure", action="store_true", help="plain HTTP (a local registry)")
    copy.add_argument(
        "--all",
        action="store_true",
        help="every platform of an index: always so (a partial index changes its digest); for skopeo's syntax",
    )
    copy.add_argument("--referrers", action="store_true", help="also copy signatures, SBOMs and attestations")
    copy.add_argument("--src-creds", metavar="USER:PASS", help="source credentials (default: ECR token or none)")
    copy.add_argument("--dest-creds", metavar="USER:PASS", help="destination credentials (default: ECR token or none)")
    copy.set_defaults(run=cmd_copy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecr-automation", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE), help="SAM template (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    def runner_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--env", action="append", metavar="NAME=VALUE", help="override a function variable")
        command.add_argument("--rules", help="rules file to use instead of the template's RULES_FILE")
        command.add_argument("--dry-run", action="store_true", help="report changes without making them")
        command.add_argument("--verbose", action="store_true", help="let the functions log and emit metrics (stderr)")

    invoke = commands.add_parser("invoke", help="run one function on one event, like `sam local invoke -e`")
    invoke.add_argument("function", help="logical id in template.yaml, e.g. TagGuardFunction")
    invoke.add_argument("event", help="event JSON file")
    invoke.add_argument("--embedded", action="store_true", help="use an in-process AWS stand-in")
    runner_options(invoke)
    invoke.set_defaults(run=cmd_invoke)

    sim = commands.add_parser("simulate", help="route events to every matching function, with feedback")
    sim.add_argument("events", nargs="+", help="event or scenario JSON files (docs/scenarios.md), in order")
    sim.add_argument("--config", dest="rules", help="rules file (default: the template's)")
    sim.add_argument("--findings", help="DescribeImageScanFindings response(s) to serve")
    sim.add_argument("--max-events", type=int, default=None, help="stop a feedback loop after this many events")
    sim.add_argument("--env", action="append", metavar="NAME=VALUE", help="override a function variable")
    sim.add_argument("--dry-run", action="store_true")
    sim.add_argument("--verbose", action="store_true")
    sim.set_defaults(run=cmd_simulate)

    check = commands.add_parser(
        "check-config", help="validate a rules file exactly as the functions do (before a deploy or a publish)"
    )
    check.add_argument("file", nargs="?", default=str(BUNDLED_RULES_FILE), help="rules file, or - for stdin")
    check.set_defaults(run=cmd_check_config)

    guard = commands.add_parser("guard", help="tag guard maintenance")
    guard_commands = guard.add_subparsers(dest="guard_command", required=True)
    backfill = guard_commands.add_parser("backfill", help="claim the protected tags repositories hold today")
    backfill.add_argument("repositories", nargs="+")
    backfill.add_argument("--table", help="ledger table (default: $TAG_LEDGER_TABLE)")
    backfill.add_argument("--registry-id", help="registry (account) id (default: the caller's account)")
    backfill.add_argument("--rules", help="rules file (default: the bundled one)")
    backfill.set_defaults(run=cmd_guard_backfill)
    release = guard_commands.add_parser(
        "release", help="release a protected tag's claim on purpose (e.g. to re-release after a loss)"
    )
    release.add_argument("repository")
    release.add_argument("tag")
    release.add_argument("--reason", required=True, help="why: recorded in the ledger with who released it")
    release.add_argument("--table", help="ledger table (default: $TAG_LEDGER_TABLE)")
    release.add_argument("--registry-id", help="registry (account) id (default: the caller's account)")
    release.set_defaults(run=cmd_guard_release)

    _add_copy_parser(commands)
    _add_lifecycle_parser(commands)

    demo = commands.add_parser("demo", help="a narrated end-to-end scenario on embedded stand-ins")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    out = sys.stdout
    try:
        # Whatever the functions print (logs, metrics) goes to stderr: stdout carries only side effects.
        # Library warnings (Powertools' "No application metrics to publish", ...) are noise to a CLI user.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(args.run(args, out))
    except UsageError as error:
        print(f"ecr-automation: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigurationError as error:
        print(f"ecr-automation: {error}", file=sys.stderr)
        return EXIT_REJECTED
