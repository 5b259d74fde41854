"""Configuration and start-up failures of every command: one line naming the field or cause plus a hint, exit 2;
`--debug` gives the traceback back. The CLI app's group does it once for all commands (layerfill/cli/main.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

from layerfill.cli import errors
from layerfill.cli.main import app
from layerfill.config.settings import Settings

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # No devstack env file, no YAML file, a devstack dir of the test's own: only what a test sets counts.
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    monkeypatch.setenv("LAYERFILL_DEVSTACK_DIR", str(tmp_path / "devstack"))
    monkeypatch.delenv("LAYERFILL_CONFIG", raising=False)
    monkeypatch.delenv("LAYERFILL_DEBUG", raising=False)
    return CliRunner()


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_bad_setting_names_the_field_the_value_and_the_variable(runner: CliRunner) -> None:
    res = runner.invoke(app, ["run", "fetcher"], env={"LAYERFILL_FETCHER__WORKERS": "abc"})
    assert res.exit_code == 2, res.output
    line = one_line(res.stderr)
    assert line.startswith("error: invalid setting fetcher.workers='abc': Input should be a valid integer")
    assert "hint: fix LAYERFILL_FETCHER__WORKERS in the environment" in line
    assert "Traceback" not in res.output


def test_setting_out_of_range_names_the_bound(runner: CliRunner) -> None:
    res = runner.invoke(app, ["run", "scanner"], env={"LAYERFILL_SCANNER__BATCH_SIZE": "0"})
    assert res.exit_code == 2
    assert "scanner.batch_size='0': Input should be greater than or equal to 1" in one_line(res.stderr)


def test_missing_config_file(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    res = runner.invoke(app, ["run", "bridge"], env={"LAYERFILL_CONFIG": str(missing)})
    assert res.exit_code == 2
    line = one_line(res.stderr)
    assert f"LAYERFILL_CONFIG names '{missing}', which is not a file" in line
    assert "hint: point LAYERFILL_CONFIG at a YAML file" in line


def test_broken_yaml_config_file(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fetcher:\n  workers: [1\n")
    res = runner.invoke(app, ["status"], env={"LAYERFILL_CONFIG": str(bad)})
    assert res.exit_code == 2
    assert f"error: {bad} is not valid YAML" in one_line(res.stderr)


def test_bad_value_from_the_config_file_points_at_the_file(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "layerfill.yaml"
    cfg.write_text("scanner:\n  clair_url: clair:6060\n")
    res = runner.invoke(app, ["run", "scanner"], env={"LAYERFILL_CONFIG": str(cfg)})
    assert res.exit_code == 2
    line = one_line(res.stderr)
    assert "scanner.clair_url='clair:6060'" in line and "must be an http(s) URL" in line
    assert "LAYERFILL_SCANNER__CLAIR_URL in the LAYERFILL_CONFIG file" in line


def test_unknown_devstack_service(runner: CliRunner) -> None:
    res = runner.invoke(app, ["devstack", "stop", "nosuch"])
    assert res.exit_code == 2
    line = one_line(res.stderr)
    assert "no devstack service named 'nosuch'; have kafka, s3, upstream, proxy, postgres, clair" in line
    assert "layerfill devstack status" in line


def test_publish_rejects_a_bad_repository_before_building_a_producer(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import layerfill.producers.publisher as publisher

    def no_producer(*_a: object, **_k: object) -> None:
        raise AssertionError("a Kafka producer was built for an invalid event")

    monkeypatch.setattr(publisher.Publisher, "__init__", no_producer)
    res = runner.invoke(app, ["publish", f"cache.example.com/Bad/Name@{DIGEST}"])
    assert res.exit_code == 2, res.output
    assert "invalid repository" in one_line(res.stderr)
    res = runner.invoke(app, ["publish", "cache.example.com/library/debian@sha256:00"])
    assert res.exit_code == 2
    assert "invalid digest" in one_line(res.stderr)
    res = runner.invoke(app, ["publish", f"cache.example.com/library/debian@{DIGEST}", "--source", "nope"])
    assert res.exit_code == 2
    assert "source must be one of" in one_line(res.stderr)


def test_debug_shows_the_traceback(runner: CliRunner) -> None:
    res = runner.invoke(app, ["--debug", "run", "fetcher"], env={"LAYERFILL_FETCHER__WORKERS": "abc"})
    assert isinstance(res.exception, pydantic.ValidationError)
    res = runner.invoke(app, ["run", "fetcher"], env={"LAYERFILL_FETCHER__WORKERS": "abc", "LAYERFILL_DEBUG": "1"})
    assert isinstance(res.exception, pydantic.ValidationError)


def test_a_bug_keeps_its_traceback() -> None:
    assert errors.describe(RuntimeError("a bug")) is None
    assert errors.describe(KeyError("x")) is None


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    with pytest.raises(pydantic.ValidationError) as info:
        Settings(kafka={"sasl_password": ["not", "a", "string"]})
    problem = errors.describe(info.value)
    assert problem is not None and "'***'" in problem.message and "not" not in problem.message.split("'***'")[1]


def test_field_paths_and_variables() -> None:
    assert errors.field_path(("routes", 0, "upstream_url")) == "routes[0].upstream_url"
    assert errors.env_var(("routes", 0, "upstream_url")) == "LAYERFILL_ROUTES"
    assert errors.env_var(("topics", "dlq", "partitions")) == "LAYERFILL_TOPICS__DLQ__PARTITIONS"


def test_the_installed_entry_point_prints_one_line(tmp_path: Path) -> None:
    """As a user runs it: a real process, stderr is the one line, nothing on stdout."""
    env = {"PATH": "/usr/bin:/bin", "LAYERFILL_ENV_FILE": "none", "LAYERFILL_FETCHER__WORKERS": "abc",
           "HOME": str(tmp_path)}  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "layerfill.cli.main", "run", "fetcher"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 2
    assert res.stdout == ""
    assert one_line(res.stderr).startswith("error: invalid setting fetcher.workers='abc'")
