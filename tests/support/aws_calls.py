"""Every AWS operation the Lambda functions make during the tests, which function made it, on what.

One recorder per test session (``RECORDER``), installed before any boto3 session exists:

- botocore: a ``before-call`` handler in ``botocore.handlers.BUILTIN_HANDLERS``, so every botocore session
  (the app's ``AwsClients``, assumed-role sessions, the test's own clients) carries it. The user's parameters
  come from ``before-parameter-build`` of the same call (the request context is shared).
- ECR's registry API (``adapters.oci.RegistryClient.request``): the HTTP requests IAM authorizes as ``ecr:``
  actions, when the registry is ECR (its credentials are an ECR token, whichever host stands in for it).

A call belongs to the function whose handler module (``Handler:`` in template.yaml) is on the calling stack;
threads the function starts inherit it. A call of application code a test drives directly (``Retagger``,
``EcrFindings``) belongs to the one function whose handler reaches that object's class through
``Dependencies`` (read from the code, ``classes_reached``); when several do (``TagLedger``) it belongs to none
and is only reported. Calls with no application code on the stack are test set-up, and not recorded.
Each call keeps the function's configuration (its ``Settings``), the region, and who made it: the function's
own role, or a role it assumed in another account.
"""

from __future__ import annotations

import ast
import contextvars
import dataclasses
import importlib.util
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import botocore.handlers

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REPORT = ROOT / "build" / "aws-calls.json"
# moto's account for the credentials "testing": the account the functions run in (AWS::AccountId).
HOME_ACCOUNT = "123456789012"
PARTITION = "aws"
APP_PACKAGE = "ecr_automation."
NOT_APP = ("ecr_automation.local.",)  # the local runner's stand-ins act as AWS, not as a function
ATTRIBUTABLE = ("ecr_automation.logic.", "ecr_automation.adapters.")

# botocore operation -> IAM action, where the action is not "<signing name>:<operation>" (verified against
# the service authorization reference and each service's guide).
ACTION_EXCEPTIONS: dict[str, str | None] = {
    # SQS: "setting permissions for SendMessage, DeleteMessage, or ChangeMessageVisibility sets permissions
    # for the corresponding batch versions" (SQS developer guide, batch actions).
    "sqs.SendMessageBatch": "sqs:SendMessage",
    "sqs.DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs.ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    # STS: GetCallerIdentity needs no permission at all.
    "sts.GetCallerIdentity": None,
}
# appconfigdata signs as "appconfig": its actions are appconfig:StartConfigurationSession and
# appconfig:GetLatestConfiguration, derived from the signing name like every other service.

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar("acting_function", default=None)


@dataclass(frozen=True)
class Call:
    """One authorization a function's call needs: an IAM action on a resource, in the function's context."""

    function: str  # "" while no function is known (application code a test drove directly)
    api: str  # "ecr.PutImage", or "registry PUT /manifests" for ECR's registry API
    action: str
    resource: str
    region: str  # the function's own region: AWS::Region
    # Template names (resources and parameters the function's environment refers to) -> their values, from the
    # running function's Settings (or the process environment); a name may hold several values.
    bindings: tuple[tuple[str, str], ...] = ()
    # Set when the call touched a resource the template gives other functions and not this one (e.g. the
    # guard run with IDEMPOTENCY_TABLE): the test configured the function as the template never deploys it.
    off_template: str = ""
    # The role the call was made as, when not the function's own: one it assumed (another account's).
    principal: str = ""
    # Made by application code a test drove directly, not through the handler (attributed through the code).
    direct: bool = False

    def bound(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, value in self.bindings:
            found.setdefault(name, []).append(value)
        return found


@dataclass
class Recorder:
    template_path: Path = TEMPLATE
    calls: dict[Call, set[str]] = field(default_factory=dict)  # -> the tests that made it
    # What feeds the comparison: the integration tests collected (node ids), their files, how each ended.
    expected_tests: set[str] = field(default_factory=set)
    expected_files: set[str] = field(default_factory=set)
    collected_files: set[str] = field(default_factory=set)
    outcomes: dict[str, str] = field(default_factory=dict)
    installed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _assumed_roles: dict[str, str] = field(default_factory=dict)  # access key -> assumed role ARN
    _registry_principals: dict[tuple[str, str], str] = field(default_factory=dict)  # ECR (account, region) -> role
    _appconfig_sessions: dict[str, str] = field(default_factory=dict)  # configuration token -> ARN

    def __post_init__(self) -> None:
        template = SamTemplate.load(self.template_path)
        self.resource_types = {name: str(spec.get("Type")) for name, spec in template.body["Resources"].items()}
        self.handler_modules: dict[str, str] = {}
        # Per function: environment variable -> the template resource or parameter its value names.
        self.environment_refs: dict[str, dict[str, str]] = {}
        global_env = template.body.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        for logical_id, properties in template.resources_of_type(FUNCTION_TYPE).items():
            self.handler_modules[str(properties["Handler"]).rsplit(".", 1)[0]] = logical_id
            variables = {**global_env, **properties.get("Environment", {}).get("Variables", {})}
            self.environment_refs[logical_id] = {
                name: _referenced_name(value) for name, value in variables.items() if _referenced_name(value)
            }
        self.every_ref = {name: ref for refs in self.environment_refs.values() for name, ref in refs.items()}
        self.classes_of_functions = classes_reached(self.handler_modules)

    # -- installation -----------------------------------------------------------------------------------
    def install(self) -> None:
        """Hook every botocore session created from now on, the registry client and thread pools."""
        if self.installed:
            return
        self.installed = True
        botocore.handlers.BUILTIN_HANDLERS.extend(
            [
                ("before-parameter-build", self._keep_parameters),
                ("before-call", self._before_call),
                ("after-call.sts.AssumeRole", self._after_assume_role),
                ("after-call.ecr.GetAuthorizationToken", self._after_authorization_token),
                ("after-call.appconfigdata", self._after_appconfig),
            ]
        )
        _wrap_thread_pools(self)
        _wrap_registry_client(self)

    # -- attribution ------------------------------------------------------------------------------------
    def function_on_stack(self) -> str | None:
        acting = _acting.get()
        if acting is not None:
            return acting
        frame = sys._getframe(1)
        while frame is not None:
            function = self.handler_modules.get(frame.f_globals.get("__name__", ""))
            if function is not None:
                return function
            frame = frame.f_back  # type: ignore[assignment]
        return None

    @staticmethod
    def _application_code_on_stack() -> bool:
        """Whether the innermost frame of this package is application code (not the local runner's stand-ins)."""
        frame = sys._getframe(1)
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if module.startswith(APP_PACKAGE) and not module.startswith("ecr_automation.adapters.oci.client"):
                return not module.startswith(NOT_APP)
            frame = frame.f_back  # type: ignore[assignment]
        return False

    @staticmethod
    def _settings_on_stack() -> dict[str, Any] | None:
        """The running function's configuration: the Settings of the ``Dependencies`` its handler holds."""
        from ecr_automation.dependencies import Dependencies  # noqa: PLC0415

        frame = sys._getframe(1)
        while frame is not None:
            for value in frame.f_locals.values():
                if isinstance(value, Dependencies):
                    dumped: dict[str, Any] = value.settings.model_dump(by_alias=True, mode="json")
                    return dumped
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def _bindings(self, refs: Mapping[str, str], settings: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
        source: Mapping[str, Any] = settings if settings is not None else os.environ
        return tuple(sorted((ref, str(source[name])) for name, ref in refs.items() if source.get(name)))

    def _off_template(self, function: str, bindings: tuple[tuple[str, str], ...], region: str, resource: str) -> str:
        own = set(self.environment_refs[function].values())
        for name, value in bindings:
            if name not in own and resource in {value, *self._arns_of(name, value, region)}:
                return name
        return ""

    def _arns_of(self, name: str, value: str, region: str) -> set[str]:
        kind = self.resource_types.get(name)
        if kind == "AWS::DynamoDB::Table":
            return {_arn("dynamodb", region, HOME_ACCOUNT, f"table/{value}")}
        if kind == "AWS::SQS::Queue" and "/" in value:
            return {queue_arn(value, region)}
        return set()

    def _function_of_application_code(self) -> str:
        """For application code a test drives directly: the one function whose handler reaches the outermost
        object of ours on the stack (``Retagger`` -> RetagFunction), or "" when several do (``TagLedger``)."""
        frames = []
        frame = sys._getframe(1)
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back  # type: ignore[assignment]
        for frame in reversed(frames):  # outermost first
            module = str(frame.f_globals.get("__name__", ""))
            owner = frame.f_locals.get("self") if module.startswith(APP_PACKAGE) else None
            kind = type(owner)
            # A logic or adapter object, not the clients factory, which every function's code goes through.
            if (
                kind.__module__.startswith(ATTRIBUTABLE)
                and kind.__module__ != "ecr_automation.adapters.clients"
                and kind.__name__ in self.classes_of_functions
            ):
                functions = self.classes_of_functions[kind.__name__]
                return next(iter(functions)) if len(functions) == 1 else ""
        return ""

    def record(self, api: str, requests: list[tuple[str, str]], principal: str = "") -> None:
        function = self.function_on_stack()
        direct = False
        if function is None:
            if not self._application_code_on_stack():
                return  # test set-up, or a stand-in acting as AWS
            function, direct = self._function_of_application_code(), True
        settings = self._settings_on_stack()
        region = str((settings or {}).get("AWS_REGION") or os.environ.get("AWS_REGION") or "")
        region = region or os.environ.get("AWS_DEFAULT_REGION", "")
        # Every name any function's environment refers to: the function is told apart afterwards.
        bindings = self._bindings(self.every_ref, settings)
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        with self._lock:
            for action, resource in requests:
                call = Call(function, api, action, resource, region, bindings, "", principal, direct)
                self.calls.setdefault(call, set()).add(test)

    def attributed(self) -> tuple[dict[Call, set[str]], dict[Call, set[str]]]:
        """(calls by function, calls of application code no single function reaches) as the comparison reads them.

        A call made by application code a test drove directly has the bindings the same file's invocations of
        that function had (such tests name their tables in code, not in the environment). Each call keeps the
        bindings its function's environment has, and is marked when it touched another function's resource.
        """
        file_bindings: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for call, tests in self.calls.items():
            if call.function and not call.direct:
                for test in tests:
                    file_bindings.setdefault((_file_of(test), call.function), set()).update(call.bindings)
        result: dict[Call, set[str]] = {}
        nobody: dict[Call, set[str]] = {}
        for call, tests in self.calls.items():
            function, bindings = call.function, call.bindings
            if not function:
                nobody[call] = tests
                continue
            if call.direct:
                seen = set(bindings)
                for test in tests:
                    seen |= file_bindings.get((_file_of(test), function), set())
                bindings = tuple(sorted(seen))
            off_template = self._off_template(function, bindings, call.region, call.resource)
            own = set(self.environment_refs[function].values())
            bindings = tuple((name, value) for name, value in bindings if name in own)
            kept = dataclasses.replace(call, bindings=bindings, off_template=off_template)
            result.setdefault(kept, set()).update(tests)
        return result, nobody

    # -- botocore hooks -----------------------------------------------------------------------------------
    @staticmethod
    def _keep_parameters(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["recorded_parameters"] = dict(params)

    def _before_call(self, model: Any, context: dict[str, Any], request_signer: Any = None, **_: Any) -> None:
        service = model.service_model.service_name
        operation = model.name
        params = context.get("recorded_parameters", {})
        region = context.get("client_region") or ""
        credentials = getattr(request_signer, "_credentials", None)
        principal = self._assumed_roles.get(str(getattr(credentials, "access_key", None)), "")
        context["recorded_principal"] = principal
        account = principal.split(":")[4] if principal else HOME_ACCOUNT
        key = f"{service}.{operation}"
        if key in ACTION_EXCEPTIONS:
            action = ACTION_EXCEPTIONS[key]
            if action is None:
                return
        else:
            action = f"{model.service_model.signing_name}:{operation}"
        requests = [(action, resource) for resource in self._resources(service, operation, params, account, region)]
        requests += _implied_requests(service, operation, params, account, region)
        self.record(key, requests, principal)

    def _after_assume_role(self, parsed: dict[str, Any], **_: Any) -> None:
        try:
            access_key = parsed["Credentials"]["AccessKeyId"]
            arn = str(parsed["AssumedRoleUser"]["Arn"])  # arn:aws:sts::<account>:assumed-role/<role>/<session>
        except (KeyError, TypeError):
            return
        account, role = arn.split(":")[4], arn.split(":")[5].split("/")[1]
        with self._lock:
            self._assumed_roles[access_key] = f"arn:{PARTITION}:iam::{account}:role/{role}"

    def _after_authorization_token(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """Registry requests with this token are made as whoever asked for it."""
        from ecr_automation.adapters.oci.auth import ecr_registry  # noqa: PLC0415

        for data in parsed.get("authorizationData", []):
            registry = ecr_registry(urlsplit(str(data.get("proxyEndpoint", ""))).netloc)
            if registry is not None:
                with self._lock:
                    self._registry_principals[registry] = str(context.get("recorded_principal", ""))

    def _after_appconfig(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        params = context.get("recorded_parameters", {})
        if model.name == "StartConfigurationSession":
            region = context.get("client_region") or ""
            arn = (
                f"arn:{PARTITION}:appconfig:{region}:{HOME_ACCOUNT}:application/{params.get('ApplicationIdentifier')}"
                f"/environment/{params.get('EnvironmentIdentifier')}"
                f"/configuration/{params.get('ConfigurationProfileIdentifier')}"
            )
            token = parsed.get("InitialConfigurationToken")
        else:
            arn = self._appconfig_sessions.get(str(params.get("ConfigurationToken")), "*")
            token = parsed.get("NextPollConfigurationToken")
        if token:
            with self._lock:
                self._appconfig_sessions[str(token)] = arn

    def _resources(
        self, service: str, operation: str, params: Mapping[str, Any], account: str, region: str
    ) -> list[str]:
        if service == "appconfigdata" and operation == "GetLatestConfiguration":
            return [self._appconfig_sessions.get(str(params.get("ConfigurationToken")), "*")]
        return resources_of(service, operation, params, account, region)

    # -- the registry API -------------------------------------------------------------------------------------
    def record_registry(self, method: str, url: str, credentials: object, host: str, body_given: bool) -> None:
        ecr = _ecr_identity(credentials, host)
        if ecr is None:
            return
        account, region = ecr
        parts = urlsplit(url)
        path = unquote(parts.path)
        principal = self._registry_principals.get((account, region), "")
        for action, repository in registry_actions(method, path, parse_qs(parts.query), body_given):
            arn = f"arn:{PARTITION}:ecr:{region}:{account}:repository/{repository}"
            self.record(f"registry {method} {_registry_resource_kind(path)}", [(action, arn)], principal)

    # -- the report ------------------------------------------------------------------------------------------
    def as_report(self, calls: Mapping[Call, set[str]]) -> dict[str, Any]:
        by_function: dict[str, list[dict[str, Any]]] = {}
        for call, tests in sorted(calls.items(), key=lambda item: (item[0].function, item[0].action)):
            by_function.setdefault(call.function or "(no function)", []).append(
                {
                    "action": call.action,
                    "resource": call.resource,
                    "api": call.api,
                    "region": call.region,
                    "bindings": call.bound(),
                    **({"off_template": call.off_template} if call.off_template else {}),
                    **({"as": call.principal} if call.principal else {}),
                    "tests": sorted(tests)[:5],
                    "test_count": len(tests),
                }
            )
        return {"calls": by_function}

    def write_report(self, calls: Mapping[Call, set[str]], extra: dict[str, Any], path: Path = REPORT) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**extra, **self.as_report(calls)}, indent=2, sort_keys=False) + "\n")
        return path


def classes_reached(handler_modules: Mapping[str, str]) -> dict[str, set[str]]:
    """Class name -> the functions whose handler reaches it through ``Dependencies`` (read from the code).

    A handler reads ``dependencies.<property>``; a property of ``Dependencies`` builds classes and reads other
    properties (``self.<property>``). The names each handler reaches, transitively, are its function's.
    """
    tree = _parse("ecr_automation.dependencies")
    container = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Dependencies")
    uses: dict[str, tuple[set[str], set[str]]] = {}  # property -> (properties, names)
    for member in container.body:
        if isinstance(member, ast.FunctionDef):
            properties, names = set(), set()
            for node in ast.walk(member):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                    properties.add(node.attr)
                elif isinstance(node, ast.Name):
                    names.add(node.id)
            uses[member.name] = (properties, names)
    reached: dict[str, set[str]] = {}
    for module, function in handler_modules.items():
        pending = list(_dependencies_read(module))
        seen: set[str] = set()
        while pending:
            prop = pending.pop()
            if prop in seen or prop not in uses:
                continue
            seen.add(prop)
            properties, names = uses[prop]
            pending.extend(properties)
            for name in names:
                reached.setdefault(name, set()).add(function)
    return reached


def _parse(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(module)
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _dependencies_read(module: str) -> set[str]:
    """``dependencies.<property>`` read by a handler module and the handler modules it imports."""
    read: set[str] = set()
    modules, done = [module], set()
    while modules:
        current = modules.pop()
        if current in done:
            continue
        done.add(current)
        for node in ast.walk(_parse(current)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dependencies":
                read.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ecr_automation.handlers."):
                modules.append(str(node.module))
    return read


def _file_of(test: str) -> str:
    return test.split("::", 1)[0]


@contextmanager
def acting_as(function: str) -> Iterator[None]:
    """Attribute the calls made inside to ``function`` (threads a function starts inherit it this way)."""
    token = _acting.set(function)
    try:
        yield
    finally:
        _acting.reset(token)


def _referenced_name(value: object) -> str:
    """The resource or parameter an environment value names: Ref X -> X, GetAtt X.Attr -> X.Attr."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref" and isinstance(argument, str) and not argument.startswith("AWS::"):
            return argument
        if function == "Fn::GetAtt" and isinstance(argument, list):
            return ".".join(str(part) for part in argument)
    return ""


# -- resources ---------------------------------------------------------------------------------------------
def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


def queue_arn(url: str, region: str) -> str:
    """An SQS queue URL (AWS's or moto's: .../<account>/<name>) as its ARN."""
    account, name = urlsplit(url).path.strip("/").split("/")[-2:]
    return _arn("sqs", region, account, name)


def resources_of(service: str, operation: str, params: Mapping[str, Any], account: str, region: str) -> list[str]:
    """The resource ARNs an operation is authorized on, from its parameters (``*`` when it has none)."""
    if "resourceArn" in params or "ResourceArn" in params:
        return [str(params.get("resourceArn") or params.get("ResourceArn"))]
    if service == "ecr":
        owner = str(params.get("registryId") or account)
        if "repositoryName" in params:
            return [_arn("ecr", region, owner, f"repository/{params['repositoryName']}")]
        if "repositoryNames" in params:
            return [_arn("ecr", region, owner, f"repository/{name}") for name in params["repositoryNames"]]
        if operation == "DescribeRepositories":
            return [_arn("ecr", region, owner, "repository/*")]
        return ["*"]
    if service == "dynamodb":
        if "TableName" in params:
            return [_arn("dynamodb", region, account, f"table/{params['TableName']}")]
        tables = list(params.get("RequestItems", {}))
        return [_arn("dynamodb", region, account, f"table/{table}") for table in tables] or ["*"]
    if service == "sqs":
        if "QueueUrl" in params:
            return [queue_arn(str(params["QueueUrl"]), region)]
        if "QueueName" in params:
            return [_arn("sqs", region, str(params.get("QueueOwnerAWSAccountId") or account), params["QueueName"])]
        return ["*"]
    if service == "events" and operation == "PutEvents":
        buses = {str(entry.get("EventBusName") or "default") for entry in params.get("Entries", [])}
        return sorted(
            bus if bus.startswith("arn:") else _arn("events", region, account, f"event-bus/{bus}") for bus in buses
        )
    if service == "secretsmanager" and "SecretId" in params:
        secret = str(params["SecretId"])
        return [secret if secret.startswith("arn:") else _arn("secretsmanager", region, account, f"secret:{secret}")]
    if service == "sns":
        return [str(params.get("TopicArn") or params.get("TargetArn") or "*")]
    if service == "sts" and "RoleArn" in params:
        return [str(params["RoleArn"])]
    if service == "ssm":
        names = [params["Name"]] if "Name" in params else list(params.get("Names", []))
        if "Path" in params:
            names = [params["Path"]]
        return [
            str(name)
            if str(name).startswith("arn:")
            else _arn("ssm", region, account, f"parameter/{str(name).lstrip('/')}")
            for name in names
        ] or ["*"]
    if service == "appconfigdata" and operation == "StartConfigurationSession":
        return [
            _arn(
                "appconfig",
                region,
                account,
                f"application/{params.get('ApplicationIdentifier')}/environment/{params.get('EnvironmentIdentifier')}"
                f"/configuration/{params.get('ConfigurationProfileIdentifier')}",
            )
        ]
    if service == "kms" and "KeyId" in params:
        key = str(params["KeyId"])
        return [key if key.startswith("arn:") else _arn("kms", region, account, f"key/{key}")]
    return ["*"]


def _implied_requests(
    service: str, operation: str, params: Mapping[str, Any], account: str, region: str
) -> list[tuple[str, str]]:
    """Further authorizations one operation needs (one per item of a transaction or a batch read)."""
    if service == "ecr" and operation == "CreateRepository" and params.get("tags"):
        # "To tag a repository when creating it, you need ecr:TagResource" (ECR: tagging on creation).
        return [
            (
                "ecr:TagResource",
                _arn("ecr", region, str(params.get("registryId") or account), f"repository/{params['repositoryName']}"),
            )
        ]
    if service == "secretsmanager" and operation == "BatchGetSecretValue":
        return [("secretsmanager:GetSecretValue", secret) for secret in params.get("SecretIdList", [])]
    if service == "dynamodb" and operation in {"TransactWriteItems", "TransactGetItems"}:
        actions = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
            "Get": "GetItem",
        }
        implied = []
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                table = _arn("dynamodb", region, account, f"table/{body['TableName']}")
                implied.append((f"dynamodb:{actions[kind]}", table))
        return implied
    return []


# -- ECR's registry API ---------------------------------------------------------------------------------------
_MANIFEST = re.compile(r"^/v2/(?P<repository>.+)/manifests/[^/]+$")
_REFERRERS = re.compile(r"^/v2/(?P<repository>.+)/referrers/[^/]+$")
_UPLOADS = re.compile(r"^/v2/(?P<repository>.+)/blobs/uploads/?$")
_UPLOAD = re.compile(r"^/v2/(?P<repository>.+)/blobs/uploads/[^/]+$")
_BLOB = re.compile(r"^/v2/(?P<repository>.+)/blobs/[^/]+$")


def registry_actions(method: str, path: str, query: Mapping[str, list[str]], body_given: bool) -> list[tuple[str, str]]:
    """The ecr: actions IAM checks for one registry API request, with the repository each is on.

    ECR's docs: pulling needs ecr:BatchGetImage (manifests; ListImageReferrers, the referrers API, too) and
    ecr:GetDownloadUrlForLayer (blobs); pushing ecr:BatchCheckLayerAvailability (HEAD blob),
    ecr:InitiateLayerUpload (POST), ecr:UploadLayerPart (PATCH, or a monolithic PUT's body),
    ecr:CompleteLayerUpload (the closing PUT) and ecr:PutImage (PUT manifest).
    """
    if match := _MANIFEST.match(path):
        action = {"GET": "BatchGetImage", "HEAD": "BatchGetImage", "PUT": "PutImage", "DELETE": "BatchDeleteImage"}
        return [(f"ecr:{action[method]}", match["repository"])] if method in action else []
    if match := _REFERRERS.match(path):
        return [("ecr:BatchGetImage", match["repository"])]
    if match := _UPLOADS.match(path):
        return [("ecr:InitiateLayerUpload", match["repository"])] if method == "POST" else []
    if match := _UPLOAD.match(path):
        repository = match["repository"]
        if method == "PATCH":
            return [("ecr:UploadLayerPart", repository)]
        if method == "PUT":
            whole = [("ecr:UploadLayerPart", repository)] if body_given else []
            return [*whole, ("ecr:CompleteLayerUpload", repository)]
        return []  # DELETE: an abandoned upload session, no IAM action
    if match := _BLOB.match(path):
        action = {"GET": "GetDownloadUrlForLayer", "HEAD": "BatchCheckLayerAvailability"}
        return [(f"ecr:{action[method]}", match["repository"])] if method in action else []
    del query
    return []


def _registry_resource_kind(path: str) -> str:
    for kind in ("manifests", "referrers", "blobs/uploads", "blobs"):
        if f"/{kind}" in path:
            return f"/{kind}"
    return path


def _ecr_identity(credentials: object, host: str) -> tuple[str, str] | None:
    from ecr_automation.adapters.oci import EcrCredentials  # noqa: PLC0415
    from ecr_automation.adapters.oci.auth import ecr_registry  # noqa: PLC0415

    if isinstance(credentials, EcrCredentials):  # an ECR host, wherever a test points it
        return credentials.account, credentials.region
    return ecr_registry(host)


def _wrap_registry_client(recorder: Recorder) -> None:
    from ecr_automation.adapters.oci.client import RegistryClient  # noqa: PLC0415

    original: Callable[..., Any] = RegistryClient.request

    def request(self: RegistryClient, method: str, url: str, **kwargs: Any) -> Any:
        body = kwargs.get("body")
        try:
            return original(self, method, url, **kwargs)
        finally:  # afterwards: the request fetched the ECR token, so whose token it is, is known
            recorder.record_registry(
                method,
                urljoin(self.base_url + "/", url),
                getattr(self, "_credentials", None),
                self.host,
                body_given=bool(body) if isinstance(body, bytes) else body is not None,
            )

    RegistryClient.request = request  # type: ignore[method-assign]


def _wrap_thread_pools(recorder: Recorder) -> None:
    """Work a function hands to a thread pool (the copier's blob workers) stays that function's."""
    original = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        function = recorder.function_on_stack()
        if function is None:
            return original(self, fn, *args, **kwargs)

        def as_function(*inner_args: Any, **inner_kwargs: Any) -> Any:
            with acting_as(function):
                return fn(*inner_args, **inner_kwargs)

        return original(self, as_function, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]


RECORDER = Recorder()
