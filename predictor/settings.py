"""The predictor's settings: one typed, validated object, read once at start-up.

Why one object: the settings used to be read from `CHURNFLOW_*` variables in several modules, some at
import time, with three different readings of a boolean (`CHURNFLOW_ACCESS_LOG=0` turned the access
log on). Now `from_command_line()` reads the command line and the environment once, when the server
starts, every boolean reads the same way (`1/true/yes/on` or `0/false/no/off`, any case), and a bad
value stops the start with one line naming the flag or variable and what was expected.

Precedence: a flag given on the command line, then its `CHURNFLOW_*` variable (a blank value counts as
unset, as Kubernetes often renders optional variables), then the default. The modules that serve read
the installed object through `current()`; serve() installs it in the server process, and each KServe
worker installs the copy that travels inside the pickled model (worker_setup.prepare_worker), so a
spawned worker sees exactly what the server process saw, flags included. docs/serving-settings.md
lists every setting; tests/test_predictor_settings.py checks that list against OPTIONS.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from churnflow.core.errors import ChurnflowError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
BOOLEAN = f"a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})"


class SettingsError(ChurnflowError):
    """A setting with a value that cannot be used: one line, naming where the value came from."""


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(BOOLEAN)
    return value


def _sha256(value: Any) -> Any:
    """64 lowercase hex digits ("sha256:" prefix and any case accepted), as the loader compares them."""
    if value is None or not str(value).strip():
        return None
    digest = str(value).strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("a SHA-256 (64 hex digits)")
    return digest


def _finite(value: Any) -> Any:
    """pydantic reads "nan" and "inf" as floats; no limit or interval means that."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # not a number at all: pydantic's own check says what was expected
    if not math.isfinite(number):
        raise ValueError("a finite number")
    return number


Flag = Annotated[bool, BeforeValidator(_boolean)]
Sha256 = Annotated[str | None, BeforeValidator(_sha256)]
Number = Annotated[float, BeforeValidator(_finite)]


class PredictorSettings(BaseModel):
    """Everything serve() and the modules around it need, typed and checked (see OPTIONS for where each
    field comes from). Frozen: read once, the same in every process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: str = "/mnt/models"
    model_name: str = Field("churn", min_length=1)
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_port: int = Field(0, ge=0, le=65535)
    """0: no gRPC server"""
    workers: int = Field(1, ge=1)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "asyncio"
    max_batch: int = Field(10_000, ge=1)
    watch_seconds: Number = Field(0.0, ge=0)
    store_url: str | None = None
    store_buffer_rows: int = Field(100_000, ge=1)
    metadata_sha256: Sha256 = None
    repository_api: Flag = False
    access_log: Flag = False
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_inflight: int = Field(64, ge=1)
    max_queue_ms: Number = Field(250.0, gt=0)
    kserve_options: dict[str, Any] = Field(default_factory=dict)
    """further keyword arguments for KServe's ModelServer, from KServe's own flags"""

    @property
    def max_queue_seconds(self) -> float:
        return self.max_queue_ms / 1000


@dataclass(frozen=True)
class Option:
    """One churnflow setting as the operator sets it: its flags (KServe's underscore spelling first, then
    the hyphenated aliases `churnflow serve` always had) and its environment variable."""

    field: str
    flags: tuple[str, ...]
    variable: str | None
    meaning: str
    metavar: str | None = None
    switch: bool = False
    """a boolean flag that may be given alone (`--enable-repository-api`) or with a value"""


OPTIONS = (
    Option("model_dir", ("--model_dir", "--model-dir"), None, "model directory or storage URI", "DIR"),
    Option("max_batch", ("--max_batch", "--max-batch"), "CHURNFLOW_MAX_BATCH", "most rows one request may carry", "N"),
    Option(
        "watch_seconds",
        ("--watch",),
        None,
        "reload a re-released model directory, checking every SECONDS (0: off)",
        "SECONDS",
    ),
    Option("store_url", ("--store",), "CHURNFLOW_STORE_URL", "log every prediction to this store", "URL"),
    Option(
        "store_buffer_rows",
        ("--store_buffer_rows", "--store-buffer-rows"),
        "CHURNFLOW_STORE_BUFFER_ROWS",
        "rows the prediction log buffers while the store is slow or away (then it drops and counts them)",
        "ROWS",
    ),
    Option(
        "metadata_sha256",
        ("--metadata_sha256", "--metadata-sha256"),
        "CHURNFLOW_METADATA_SHA256",
        "refuse a model whose metadata.json has another SHA-256",
        "HEX",
    ),
    Option(
        "repository_api",
        ("--enable_repository_api", "--enable-repository-api"),
        "CHURNFLOW_REPOSITORY_API",
        "serve the model repository's load and unload requests",
        "BOOL",
        switch=True,
    ),
    Option(
        "access_log",
        ("--enable_access_log", "--enable-access-log"),
        "CHURNFLOW_ACCESS_LOG",
        "log a line per request (uvicorn's access log and KServe's timing line)",
        "BOOL",
        switch=True,
    ),
    Option(
        "max_body_bytes",
        ("--max_body_bytes", "--max-body-bytes"),
        "CHURNFLOW_MAX_BODY_BYTES",
        "larger request bodies get 413",
        "BYTES",
    ),
    Option(
        "max_inflight",
        ("--max_inflight", "--max-inflight"),
        "CHURNFLOW_MAX_INFLIGHT",
        "inference requests one worker serves at once; more get 503 with Retry-After",
        "N",
    ),
    Option(
        "max_queue_ms",
        ("--max_queue_ms", "--max-queue-ms"),
        "CHURNFLOW_MAX_QUEUE_MS",
        "queueing delay of a worker's event loop above which new inference requests get 503",
        "MS",
    ),
)
"""churnflow's own settings. KServe's (--http_port, --workers, --event-loop, ...) come from its parser."""

KSERVE_PASS_THROUGH = (
    "max_threads",
    "max_asyncio_workers",
    "enable_docs_url",
    "enable_latency_logging",
    "access_log_format",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)
"""KServe flags that become ModelServer arguments; KServe reads the rest of its flags (logging
configuration, gRPC message sizes, transformer settings) from the command line itself."""


@dataclass(frozen=True)
class Given:
    """A flag's value as typed, with the spelling used: a bad value is reported under that name."""

    text: str
    flag: str


class _Given(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, Given(str(values), option_string or self.dest))


def add_arguments(parser: argparse.ArgumentParser, model_dir_required: bool = False) -> None:
    """Adds churnflow's flags to a parser that already has KServe's (predictor/__main__.py)."""
    ours = parser.add_argument_group("churnflow (flag, then $variable, then default; docs/serving-settings.md)")
    defaults = PredictorSettings()
    for option in OPTIONS:
        default = getattr(defaults, option.field)
        default = "unset" if default is None else str(default).lower() if isinstance(default, bool) else default
        source = f"${option.variable}, else {default}" if option.variable else f"{default}"
        required = model_dir_required and option.field == "model_dir"
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if option.switch else {}
        ours.add_argument(
            *option.flags,
            dest=option.field,
            action=_Given,
            metavar=option.metavar,
            default=None,
            required=required,
            help=f"{option.meaning} ({'required' if required else f'default: {source}'})",
            **extra,
        )
    # The spellings `churnflow serve` had for KServe's own flags, same meaning.
    hidden = argparse.SUPPRESS
    ours.add_argument("--port", dest="http_port", type=int, help=hidden)
    ours.add_argument("--grpc-port", dest="grpc_port", type=int, help=hidden)
    ours.add_argument("--model-name", dest="model_name", help=hidden)
    ours.add_argument("--event_loop", dest="event_loop", choices=["auto", "asyncio", "uvloop"], help=hidden)
    # churnflow's defaults where they differ from KServe's (see predictor/__main__.py); None: not given.
    parser.set_defaults(
        model_name="churn", event_loop="asyncio", enable_latency_logging=False, grpc_port=None, enable_grpc=None
    )


def from_command_line(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> PredictorSettings:
    """The settings from parsed flags (add_arguments plus KServe's parser) and the environment.

    Raises SettingsError, one line naming the flag or variable, for a value that cannot be used."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, tuple[str, Any]] = {}
    for option in OPTIONS:
        given = getattr(args, option.field, None)
        if isinstance(given, Given):
            values[option.field], sources[option.field] = given.text, (given.flag, given.text)
        elif option.variable and environ.get(option.variable, "").strip():
            text = environ[option.variable]
            values[option.field], sources[option.field] = text, (option.variable, text)
    grpc = args.enable_grpc if args.enable_grpc is not None else args.grpc_port not in (None, 0)
    values.update(
        model_name=args.model_name,
        http_port=args.http_port,
        grpc_port=(args.grpc_port or 8081) if grpc else 0,
        workers=args.workers,
        event_loop=args.event_loop,
        kserve_options={name: getattr(args, name) for name in KSERVE_PASS_THROUGH},
    )
    for field, flag in (("http_port", "--http_port"), ("grpc_port", "--grpc_port"), ("workers", "--workers")):
        sources[field] = (flag, values[field])
    return validated(values, sources)


def validated(values: dict[str, Any], sources: dict[str, tuple[str, Any]]) -> PredictorSettings:
    """PredictorSettings(**values), or one line for the first value it refuses."""
    try:
        return PredictorSettings(**values)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        name, raw = sources.get(field, (field, first.get("input")))
        raise SettingsError(f"{name}: expected {_expected(field, first)}, got {str(raw)[:80]!r}") from None


def _expected(field: str, error: Mapping[str, Any]) -> str:
    """What a field takes, in words, from the error pydantic reports for it."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    annotation = PredictorSettings.model_fields[field]
    kind = {int: "a whole number", float: "a number"}.get(annotation.annotation, "a value")
    bounds = []
    for constraint in annotation.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤")):
            limit = getattr(constraint, attribute, None)
            if limit is not None:
                bounds.append(f"{sign} {limit}")
    if error["type"] == "literal_error":
        return f"one of {error['ctx']['expected']}"
    return " ".join([kind, " and ".join(bounds)]).strip()


_CURRENT: list[PredictorSettings] = []


def install(settings: PredictorSettings) -> None:
    """Makes `settings` this process's settings (the server process at start, each worker on unpickling)."""
    _CURRENT[:] = [settings]


def current() -> PredictorSettings:
    """This process's settings; the defaults when none were installed (a model used in process, a test).

    Never reads the environment: what serves is what start-up read and checked."""
    return _CURRENT[0] if _CURRENT else PredictorSettings()
