"""The predictor's settings (issue 22, item 2): one typed object read once at start-up, every boolean
read the same way, a bad value one line; `churnflow serve` on the same parser as
`python -m churnflow.predictor` (KServe's flags plus churnflow's, the old spellings as aliases)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import CHURNFLOW

ROOT = Path(__file__).resolve().parents[1]
ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}
PROGRAMS = {"churnflow serve": [CHURNFLOW, "serve"], "python -m": [sys.executable, "-m", "churnflow.predictor"]}
ACCESS_LINE = '"POST /v1/models/churn%3Apredict HTTP/1.1" 200'


def settings_of(*argv: str, env: dict[str, str] | None = None):
    """The settings `churnflow serve ARGV` would serve with, under environment `env` (nothing else)."""
    from churnflow.predictor.__main__ import build_parser
    from churnflow.predictor.settings import from_command_line

    args = build_parser("churnflow serve", model_dir_required=True).parse_args(["--model-dir", "m", *argv])
    return from_command_line(args, env or {})


# -- real servers ---------------------------------------------------------------------------------------


def test_access_log_0_silences_the_access_log_and_1_keeps_it(start_server, model_dir):
    """CHURNFLOW_ACCESS_LOG=0 used to turn the access log on (any non-empty value did)."""
    servers = {value: start_server(model_dir, env={"CHURNFLOW_ACCESS_LOG": value}) for value in ("0", "1")}
    for server in servers.values():
        assert httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 200
    # The access line is written once the answer is sent; the second request makes sure the first one's
    # line has been written before the log is read.
    for server in servers.values():
        httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
    assert ACCESS_LINE in servers["1"].log(), servers["1"].log()[-2000:]
    assert ACCESS_LINE not in servers["0"].log() and "kserve.trace" not in servers["0"].log(), servers["0"].log()


def test_settings_given_as_flags_reach_spawned_workers(start_server, model_dir):
    """With --workers 2 only the spawned workers answer HTTP: a limit they did not receive would be the
    default (10,000 rows, 10 MiB). KServe's --max_batch spelling is taken by `churnflow serve` too."""
    server = start_server(model_dir, "--workers", "2", "--max_batch", "2", "--max-body-bytes", "1500")
    for _ in range(6):  # new connections, spread over both workers
        three = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW] * 3})
        assert three.status_code == 400 and "batch limit of 2" in three.json()["error"], three.text
        big = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW] * 2, "pad": "x" * 2000})
        assert big.status_code == 413, big.text
        assert httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW] * 2}).status_code == 200


# -- start-up errors and help -----------------------------------------------------------------------------


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            [],
            {"CHURNFLOW_ACCESS_LOG": "maybe"},
            "CHURNFLOW_ACCESS_LOG: expected a boolean (1/true/yes/on or 0/false/no/off), got 'maybe'",
        ),
        ([], {"CHURNFLOW_MAX_INFLIGHT": "lots"}, "CHURNFLOW_MAX_INFLIGHT: expected a whole number ≥ 1, got 'lots'"),
        (["--max-queue-ms", "inf"], {}, "--max-queue-ms: expected a finite number, got 'inf'"),
    ],
    ids=["access-log-maybe", "inflight-lots", "queue-inf"],
)
def test_a_bad_setting_is_one_line_naming_it(program, argv, env, line, model_dir):
    import os

    done = subprocess.run(
        [*PROGRAMS[program], "--model-dir", str(model_dir), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [f"churnflow: error: {line}"]
    assert done.stdout == ""


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_bad_value_of_a_kserve_flag_is_one_line_too(program, model_dir):
    """KServe parses the command line itself when imported and would print its whole usage text."""
    done = subprocess.run(
        [*PROGRAMS[program], "--model-dir", str(model_dir), "--workers", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.endswith("error: argument --workers: invalid int value: 'abc' (--help lists the flags)"), line


def test_churnflow_serve_help_lists_kserve_flags_as_python_m_does():
    helps = {}
    for name, program in PROGRAMS.items():
        done = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        helps[name] = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", done.stdout))
    serve = helps["churnflow serve"]
    kserve = {"--http_port", "--grpc_port", "--workers", "--max_threads", "--enable_docs_url", "--timeout-keep-alive"}
    ours = {"--model-dir", "--model_dir", "--max-batch", "--max_batch", "--enable-repository-api", "--watch", "--store"}
    assert kserve | ours <= serve, sorted(kserve | ours - serve)
    assert serve == helps["python -m"]  # one parser


def test_the_churnflow_cli_imports_without_kserve(tmp_path):
    """The train image has no KServe: every other command must work, and serve says what is missing."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kserve' or name.startswith('kserve.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert subprocess.run([CHURNFLOW, "--help"], capture_output=True, env=env, timeout=60).returncode == 0
    done = subprocess.run([CHURNFLOW, "serve", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "KServe is not installed" in done.stderr and "churnflow[serve]" in done.stderr


# -- the settings object ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "kserve"),
    [
        (["--max-batch", "5"], ["--max_batch", "5"]),
        (["--max-batch=5"], ["--max_batch=5"]),
        (["--port", "9000"], ["--http_port", "9000"]),
        (["--grpc-port", "9001"], ["--grpc_port", "9001"]),
        (["--model-name", "other"], ["--model_name", "other"]),
        (["--event-loop", "uvloop"], ["--event_loop", "uvloop"]),
        (["--metadata-sha256", "A" * 64], ["--metadata_sha256", "sha256:" + "a" * 64]),
        (["--enable-repository-api"], ["--enable_repository_api", "true"]),
        (["--enable-access-log"], ["--enable_access_log", "YES"]),
        (["--store-buffer-rows", "7"], ["--store_buffer_rows", "7"]),
        (["--max-inflight", "3"], ["--max_inflight", "3"]),
    ],
)
def test_each_old_spelling_means_what_the_kserve_spelling_means(old, kserve):
    assert settings_of(*old) == settings_of(*kserve) != settings_of()


def test_every_boolean_reads_the_same_way():
    from churnflow.predictor.settings import FALSE_WORDS, OPTIONS, TRUE_WORDS

    switches = [option for option in OPTIONS if option.switch]
    assert {option.variable for option in switches} == {"CHURNFLOW_ACCESS_LOG", "CHURNFLOW_REPOSITORY_API"}
    for option in switches:
        for words, expected in ((TRUE_WORDS, True), (FALSE_WORDS, False)):
            for word in (*words, *(w.upper() for w in words), *(f" {w.title()} " for w in words)):
                assert getattr(settings_of(env={option.variable: word}), option.field) is expected, (option, word)
                assert getattr(settings_of(option.flags[0], word), option.field) is expected, (option, word)
        assert getattr(settings_of(env={option.variable: ""}), option.field) is False  # blank: unset


def test_a_flag_beats_its_variable_which_beats_the_default():
    env = {"CHURNFLOW_MAX_BATCH": "7", "CHURNFLOW_REPOSITORY_API": "on", "CHURNFLOW_MAX_QUEUE_MS": "50"}
    assert settings_of().max_batch == 10_000
    from_env = settings_of(env=env)
    assert (from_env.max_batch, from_env.repository_api, from_env.max_queue_seconds) == (7, True, 0.05)
    flagged = settings_of("--max-batch", "3", "--enable-repository-api", "false", env=env)
    assert (flagged.max_batch, flagged.repository_api) == (3, False)


def test_grpc_is_off_unless_a_port_or_enable_grpc_is_given():
    assert settings_of().grpc_port == 0
    assert settings_of("--grpc-port", "0").grpc_port == 0  # churnflow serve's old "none"
    assert settings_of("--grpc_port", "9001").grpc_port == 9001
    assert settings_of("--enable_grpc", "true").grpc_port == 8081
    assert settings_of("--grpc_port", "9001", "--enable_grpc", "false").grpc_port == 0


def test_the_settings_survive_pickling_and_are_frozen():
    import pickle

    settings = settings_of("--max-batch", "5", "--enable-access-log", env={"CHURNFLOW_STORE_URL": "sqlite:///x.db"})
    assert pickle.loads(pickle.dumps(settings)) == settings
    with pytest.raises(Exception, match="frozen"):
        settings.max_batch = 6


def test_no_predictor_module_reads_churnflow_variables_itself():
    """Only predictor/settings.py reads the environment for a CHURNFLOW_* setting, and only at start-up."""
    readers = []
    for path in [*(ROOT / "predictor").glob("*.py"), *(ROOT / "churnflow" / "store").glob("*.py")]:
        text = path.read_text()
        if path.name != "settings.py" and re.search(r"(environ|getenv)\W+[^\n]*CHURNFLOW_", text):
            readers.append(path.name)
    assert readers == []


def test_the_settings_document_lists_every_setting():
    from churnflow.predictor.settings import OPTIONS

    rows = [line for line in (ROOT / "docs" / "serving-settings.md").read_text().splitlines() if line.startswith("|")]
    for option in OPTIONS:
        (row,) = [r for r in rows if f"`{option.flags[0]}`" in r]
        assert all(f"`{flag}`" in row for flag in option.flags), row
        assert (f"`{option.variable}`" in row) if option.variable else "CHURNFLOW_" not in row, row
