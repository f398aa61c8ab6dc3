"""What `sam build` ships (functions/Makefile): only what runs in Lambda, with bytecode, for the right architecture.

Two builds: template.yaml as it is (arm64, the session's ``sam_build``), and a copy whose functions run on
this host's architecture, so each handler can be imported from its artifact here, as Lambda imports it:
from the artifact alone, no site-packages, the local runner absent.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.template.conftest import ROOT, TEMPLATE, run_tool, tool

pytestmark = pytest.mark.slow

RUNTIME_PYTHON = "python3.13"
CACHE_TAG = "cpython-313"
# Python 3.13's bytecode magic number: the runtime's Python compiled it.
MAGIC_313 = (3571).to_bytes(2, "little") + b"\r\n"
UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, source never checked
# Never in a Lambda artifact: the local runner and the command line, and what only they or the tests use.
ABSENT_PATHS = ("ecr_automation/local", "ecr_automation/cli.py", "ecr_automation/__main__.py", "moto", "yaml", "_yaml")
ABSENT_DISTRIBUTIONS = ("moto", "PyYAML", "pytest", "hypothesis", "requests", "responses", "werkzeug", "flask")
RUNTIME_PACKAGES = ("aws_lambda_powertools", "aws_xray_sdk", "boto3", "botocore", "pydantic", "pydantic_core", "re2")
MACHINE_TO_LAMBDA = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
SO_MARKER = {"arm64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}


def artifacts(build_dir: Path, template: SamTemplate) -> dict[str, tuple[Path, str]]:
    """Each function's artifact directory and handler module."""
    return {
        logical_id: (build_dir / logical_id, function.handler.rsplit(".", 1)[0])
        for logical_id, function in template.functions().items()
    }


def architecture_of(template: SamTemplate, logical_id: str) -> str:
    """The function's architecture: its own Architectures, else Globals', else Lambda's default."""
    properties = template.body["Resources"][logical_id].get("Properties", {})
    function_globals = template.body.get("Globals", {}).get("Function", {})
    (architecture,) = properties.get("Architectures", function_globals.get("Architectures", ["x86_64"]))
    return str(architecture)


def compiled_path(source: Path) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc"


@pytest.fixture(scope="module")
def native_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` of a copy of template.yaml whose functions run on this host's architecture."""
    architecture = MACHINE_TO_LAMBDA[platform.machine().lower()]
    body = json.loads(json.dumps(SamTemplate.load(TEMPLATE).body))
    function_globals = body.setdefault("Globals", {}).setdefault("Function", {})
    function_globals["Architectures"] = [architecture]
    for section in (function_globals, *(resource.get("Properties", {}) for resource in body["Resources"].values())):
        if isinstance(section.get("CodeUri"), str):
            section["CodeUri"] = str((ROOT / section["CodeUri"]).resolve())
    for resource in body["Resources"].values():
        if resource.get("Type") == FUNCTION_TYPE and "Architectures" in resource.get("Properties", {}):
            resource["Properties"]["Architectures"] = [architecture]
    work = tmp_path_factory.mktemp("native-sam-build")
    copy = work / "template.json"
    copy.write_text(json.dumps(body))
    completed = run_tool(tool("sam"), "build", "--template-file", str(copy), "--build-dir", str(work / "build"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return work / "build"


def test_nothing_of_the_local_runner_moto_or_yaml_ships(sam_build: Path, template: SamTemplate) -> None:
    for logical_id, (artifact, _) in artifacts(sam_build, template).items():
        shipped = [path for path in ABSENT_PATHS if (artifact / path).exists()]
        assert not shipped, f"{logical_id} ships {shipped}"
        names = {path.name.split("-")[0].lower() for path in artifact.glob("*.dist-info")}
        unwanted = sorted(names & {name.lower() for name in ABSENT_DISTRIBUTIONS})
        assert not unwanted, f"{logical_id} ships {unwanted}"
        assert not list(artifact.rglob("*.egg-info")), f"{logical_id} ships the development install's egg-info"


def test_every_shipped_module_has_unchecked_hash_bytecode_for_the_runtime(
    sam_build: Path, template: SamTemplate
) -> None:
    for logical_id, (artifact, _) in artifacts(sam_build, template).items():
        sources = list(artifact.rglob("*.py"))
        assert len(sources) > 500, f"{logical_id}: only {len(sources)} modules: dependencies missing?"
        missing, wrong = [], []
        for source in sources:
            compiled = compiled_path(source)
            if not compiled.is_file():
                missing.append(str(source.relative_to(artifact)))
                continue
            header = compiled.read_bytes()[:8]
            if header[:4] != MAGIC_313 or int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
                wrong.append(str(compiled.relative_to(artifact)))
        assert not missing, f"{logical_id}: no {CACHE_TAG} bytecode for {missing[:10]} ({len(missing)} in all)"
        assert not wrong, f"{logical_id}: not Python 3.13 unchecked-hash bytecode: {wrong[:10]} ({len(wrong)})"


def test_the_runtime_dependencies_are_built_for_the_template_architecture(
    sam_build: Path, template: SamTemplate
) -> None:
    for logical_id, (artifact, _) in artifacts(sam_build, template).items():
        architecture = architecture_of(template, logical_id)
        assert architecture == "arm64", f"{logical_id}: template.yaml runs on {architecture}"
        missing = [package for package in RUNTIME_PACKAGES if not (artifact / package).is_dir()]
        assert not missing, f"{logical_id}: runtime dependencies missing: {missing}"
        extensions = list(artifact.rglob("*.so"))
        assert any(path.parent.name == "pydantic_core" for path in extensions), f"{logical_id}: no pydantic_core"
        foreign = [
            path.name for path in extensions if "linux-gnu" in path.name and SO_MARKER[architecture] not in path.name
        ]
        assert not foreign, f"{logical_id}: extension modules for another architecture: {foreign}"


def test_a_copy_for_another_architecture_gets_that_architecture(native_build: Path, template: SamTemplate) -> None:
    architecture = MACHINE_TO_LAMBDA[platform.machine().lower()]
    for logical_id, (artifact, _) in artifacts(native_build, template).items():
        (compiled,) = (artifact / "pydantic_core").glob("_pydantic_core*.so")
        assert SO_MARKER[architecture] in compiled.name, f"{logical_id}: {compiled.name}"


def test_every_handler_imports_from_its_artifact_alone_from_bytecode(native_build: Path, template: SamTemplate) -> None:
    python = shutil.which(RUNTIME_PYTHON)
    assert python is not None, f"{RUNTIME_PYTHON} is not on PATH: make test puts it there"
    for logical_id, (artifact, module) in artifacts(native_build, template).items():
        # -I -S: no site-packages, no PYTHON* variables; the artifact is all there is, as in Lambda.
        probe = (
            "import importlib, json, sys; sys.path.insert(0, sys.argv[1]); importlib.import_module(sys.argv[2]); "
            "print(json.dumps(sorted(sys.modules)))"
        )
        completed = subprocess.run(
            [python, "-I", "-S", "-v", "-c", probe, str(artifact), module],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true"},
        )
        assert completed.returncode == 0, f"{logical_id}: {module} does not import:\n{completed.stderr[-3000:]}"
        modules = set(json.loads(completed.stdout.strip().splitlines()[-1]))
        unwanted = sorted(name for name in modules if name.startswith(("ecr_automation.local", "moto", "yaml")))
        assert not unwanted, f"{logical_id}: {module} imports {unwanted}"
        # Every module of the artifact came from its .pyc: none was compiled from source at import.
        loaded = [line for line in completed.stderr.splitlines() if line.startswith("# code object from")]
        from_artifact = [line for line in loaded if str(artifact) in line]
        assert from_artifact, f"{logical_id}: nothing was imported from the artifact"
        compiled_at_import = [line for line in from_artifact if not line.rstrip("'").endswith(".pyc")]
        assert not compiled_at_import, f"{logical_id}: compiled at import: {compiled_at_import[:5]}"
