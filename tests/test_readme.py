"""The README's commands, run as written: every ```bash block, top to bottom, in a fresh copy of the repo.

The convention (also in the README, "The README is tested"):

- Every ```bash block runs, in order, in one fresh copy of the repository (the files git tracks, as a
  clone has them) with the project's `.venv` linked in and its `bin/` first on PATH. Blocks share the
  working directory: later blocks use what earlier ones wrote (runs/latest/model, telco.csv, ...).
  Each block runs under `bash -e -o pipefail`: a failing command fails the test. A command that is
  meant to fail says so in the README (`churnflow run ... || echo "exit status $?"`).
- The line right before a block's fence may be a marker (anything else there that looks like one fails):
    <!-- not-run: REASON -->   the block is not run here (needs a cluster, Docker, minutes of
                               benchmarks ...); the reason is required and printed by the test.
    <!-- background -->        the block's command keeps serving (a model server, scripts/demo.sh): it
                               is started in the background, the next blocks run once
                               http://localhost:PORT/v2/health/ready answers 200, and it is stopped
                               (its whole process group) when the next background block starts or at
                               the end. It must still be running when it is stopped.
- A page of docs/ may start from what a command leaves behind (the released model in runs/latest):
    <!-- setup: COMMAND -->       on a line of its own, anywhere in the page; the command runs once per
                               test session in a fresh copy, and each page naming it starts from a copy
                               of that result (one pipeline run shared by the pages, not one per page).
- Expected answers: a comment line holding JSON right after a command (`# {"predictions":[...]}`,
  possibly continued on the next `#` lines) is the expected output of the commands since the previous
  expectation in that block; the last JSON value they printed must equal it, numbers to the precision
  written (0.934 matches 0.93412...; a full-precision 0.8244425564099428 must match within 1e-15, as
  the forest's summation order may move the last bit).
- Port 8080 in a block becomes a free port, and CHURNFLOW_PORT is set to it (scripts/demo.sh), so the
  test can run beside other servers. CHURNFLOW_* variables of the calling shell are not passed on.

Cost: the README's pipeline runs (about five, 10-20 s each on a quiet machine) dominate; keep new blocks cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
README_PORT = "8080"
MARKER = re.compile(r"^<!--\s*(not-run|background)\s*(?::\s*(.*?))?\s*-->$")
SETUP = re.compile(r"^<!--\s*setup\s*:(.*?)-->$", re.M)
EXPECTED_START = re.compile(r"^#\s*[\[{]")


@dataclass
class Segment:
    """Commands followed (optionally) by the JSON they are expected to print last."""

    script: str
    expected: str | None = None


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in the README
    text: str
    kind: str = "run"  # run, not-run or background
    reason: str = ""
    segments: list[Segment] = field(default_factory=list)


def parse_blocks(markdown: str) -> list[Block]:
    """The ```bash blocks with their markers; a malformed marker is an error, not a silently run block."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README line {start + 1}: a ```bash block is never closed")
        block = Block(line=start + 1, text="\n".join(lines[start + 1 : end]) + "\n")
        before = lines[start - 1].strip() if start else ""
        if before.startswith("<!--"):
            match = MARKER.match(before)
            if not match:
                raise ValueError(f"README line {start}: unknown marker {before!r} (not-run: REASON or background)")
            block.kind, block.reason = match.group(1), (match.group(2) or "")
            if block.kind == "not-run" and not block.reason:
                raise ValueError(f"README line {start}: <!-- not-run: REASON --> needs its reason")
        block.segments = split_expectations(block.text)
        blocks.append(block)
        i = end + 1
    return blocks


def split_expectations(text: str) -> list[Segment]:
    """Splits a block at its expected-output comments (`# {...}` lines that parse as JSON together)."""
    lines = text.splitlines()
    segments: list[Segment] = []
    script: list[str] = []
    i = 0
    while i < len(lines):
        if EXPECTED_START.match(lines[i]):
            for j in range(i, len(lines)):
                if not lines[j].startswith("#"):
                    break
                candidate = " ".join(line[1:].strip() for line in lines[i : j + 1])
                try:
                    json.loads(candidate)
                except ValueError:
                    continue
                segments.append(Segment("\n".join(script) + "\n", candidate))
                script, i = [], j + 1
                break
            else:
                script.append(lines[i])
                i += 1
            continue
        script.append(lines[i])
        i += 1
    if any(line.strip() and not line.lstrip().startswith("#") for line in script):
        segments.append(Segment("\n".join(script) + "\n"))
    return segments


class Written(float):
    """A number as the README writes it, remembering how many decimals were written."""

    decimals: int

    def __new__(cls, text: str) -> Written:
        number = super().__new__(cls, text)
        mantissa = text.lower().split("e")[0]
        number.decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        if "e" in text.lower():
            number.decimals -= int(text.lower().split("e")[1])
        return number


def mismatches(expected, actual, where: str = "") -> list[str]:
    """Differences between the README's expected JSON (numbers as written) and what the command printed."""
    if isinstance(expected, Written):
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        tolerance = 0.5 * 10.0**-expected.decimals + 1e-15
        return [] if ok and abs(actual - expected) <= tolerance else [f"{where or '.'}: {actual!r} ≠ {expected}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return [
                f"{where or '.'}: keys {sorted(actual) if isinstance(actual, dict) else actual!r} ≠ {sorted(expected)}"
            ]
        return [m for k in expected for m in mismatches(expected[k], actual[k], f"{where}.{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where or '.'}: {actual!r} ≠ {expected!r}"]
        return [
            m for n, (e, a) in enumerate(zip(expected, actual, strict=True)) for m in mismatches(e, a, f"{where}[{n}]")
        ]
    same = expected == actual and type(expected) is type(actual)
    return [] if same else [f"{where or '.'}: {actual!r} ≠ {expected!r}"]


def last_json(output: str):
    """The last JSON value in a stream of them (curl -s prints answers without newlines between them)."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while True:
        start = min((p for p in (output.find("{", position), output.find("[", position)) if p >= 0), default=-1)
        if start < 0:
            break
        try:
            value, position = decoder.raw_decode(output, start)
            values.append(value)
        except ValueError:
            position = start + 1
    if not values:
        raise AssertionError(f"no JSON in the output:\n{output}")
    return values[-1]


def fresh_copy(target: Path) -> None:
    """The repository as a fresh clone has it: the files git tracks (and new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(VENV, target_is_directory=True)


class Background:
    """A background block: its process group, its log, and a wait for the server it starts."""

    def __init__(self, block: Block, script: str, cwd: Path, env: dict[str, str], port: int) -> None:
        self.block, self.port = block, port
        self.log_path = cwd / f".readme-background-{block.line}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"README line {self.block.line}: the background block exited early:\n{self.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"README line {self.block.line}: not ready after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> str:
        """Stops the process group; returns why it failed, or "" when it was still running as it should."""
        problem = ""
        if self.process.poll() is not None:
            problem = f"README line {self.block.line}: the background block had exited:\n{self.log()}"
        else:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return problem


def readme_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNFLOW_") and k != "VIRTUAL_ENV"}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["CHURNFLOW_PORT"] = str(port)
    return env


def run_readme(readme: str, workdir: Path, port: int) -> list[tuple[int, str, float]]:
    """Runs the README's blocks in `workdir`; returns (line, what, seconds) per block, failing on the first error."""
    env = readme_env(port)
    timings: list[tuple[int, str, float]] = []
    background: Background | None = None
    problem = ""
    try:
        for block in parse_blocks(readme):
            if block.kind == "not-run":
                timings.append((block.line, f"not run: {block.reason}", 0.0))
                continue
            started = time.monotonic()
            if block.kind == "background":
                if background is not None:
                    assert not (problem := background.stop()), problem
                background = Background(block, block.text.replace(README_PORT, str(port)), workdir, env, port)
                background.wait_ready(timeout=900)
                timings.append((block.line, "background, ready", time.monotonic() - started))
                continue
            for segment in block.segments:
                script = segment.script.replace(README_PORT, str(port))
                done = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", script],
                    cwd=workdir,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                assert done.returncode == 0, (
                    f"README line {block.line}: exit status {done.returncode} from\n{segment.script}\n"
                    f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
                    + (f"\nbackground server log:\n{background.log()}" if background else "")
                )
                if segment.expected is not None:
                    expected = json.loads(segment.expected, parse_float=Written)
                    differences = mismatches(expected, last_json(done.stdout))
                    assert not differences, (
                        f"README line {block.line}: the answer differs from the README's\n{segment.script}\n"
                        + "\n".join(differences)
                    )
            timings.append((block.line, "ran", time.monotonic() - started))
    finally:
        if background is not None:
            problem = background.stop()
    assert not problem, problem
    return timings


# -- the convention itself -------------------------------------------------------------------------------


def test_blocks_markers_and_expected_answers_are_parsed():
    readme = """
<!-- not-run: needs a Kubeflow cluster -->
```bash
kubectl apply -k manifests/
```

<!-- background -->
```bash
churnflow serve --model-dir runs/latest/model --port 8080
```

```bash
# a comment, not an answer
curl -s localhost:8080/a
# {"predictions":[{"churn":1,
#   "probability":0.934}]}
curl -s localhost:8080/b
curl -s localhost:8080/c   # {"not": "an answer: on the command's line"}
```
"""
    cluster, server, calls = parse_blocks(readme)
    assert (cluster.kind, cluster.reason, server.kind, calls.kind) == (
        "not-run",
        "needs a Kubeflow cluster",
        "background",
        "run",
    )
    first, second = calls.segments
    assert first.script.endswith("curl -s localhost:8080/a\n") and json.loads(first.expected)["predictions"]
    assert second.expected is None and "localhost:8080/c" in second.script
    for bad in ("<!-- not-run -->", "<!-- not-run: -->", "<!-- skip: flaky -->"):
        with pytest.raises(ValueError, match="README line 1"):
            parse_blocks(f"{bad}\n```bash\ntrue\n```\n")


def test_answers_are_compared_to_the_precision_written():
    expected = json.loads(
        '{"churn":1,"probability":0.934,"exact":0.8244425564099428,"top":[["age",-0.029]]}', parse_float=Written
    )
    good = {"churn": 1, "probability": 0.93412578, "exact": 0.8244425564099428, "top": [["age", -0.0292832]]}
    assert mismatches(expected, good) == []
    assert mismatches(expected, {**good, "probability": 0.9346}) == [".probability: 0.9346 ≠ 0.934"]
    assert mismatches(expected, {**good, "exact": 0.82444255640994}) != []
    assert mismatches(expected, {**good, "churn": 0}) == [".churn: 0 ≠ 1"]
    assert mismatches(expected, {**good, "extra": 1}) != []
    assert mismatches(expected, {**good, "top": [["age", -0.029], ["x", 1.0]]}) != []
    assert last_json('{"a":1}{"predictions":[1]}\n') == {"predictions": [1]}


def test_a_broken_command_or_a_changed_answer_fails(tmp_path):
    port = free_port()
    with pytest.raises(AssertionError, match=r"README line 1: exit status 2"):
        run_readme(
            "```bash\nchurnflow generate --rows 5 --output x.csv\nchurnflow generate --rows 0\n```\n", tmp_path, port
        )
    changed = '```bash\necho \'{"churn": 1, "probability": 0.5}\'\n# {"churn": 1, "probability": 0.6}\n```\n'
    with pytest.raises(AssertionError, match=r"probability: 0.5 ≠ 0.6"):
        run_readme(changed, tmp_path, port)


# -- the README ------------------------------------------------------------------------------------------


def setup_command(markdown: str) -> str | None:
    """The page's `<!-- setup: COMMAND -->`, if any; more than one, or an empty one, is an error."""
    found = [command.strip() for command in SETUP.findall(markdown)]
    if len(found) > 1 or (found and not found[0]):
        raise ValueError(f"at most one <!-- setup: COMMAND --> with its command, found {found}")
    return found[0] if found else None


def test_the_readme_markers_are_well_formed():
    """Seconds, not minutes: a merged block with a malformed marker or a reasonless not-run fails here first."""
    blocks = parse_blocks((ROOT / "README.md").read_text())
    kinds = [b.kind for b in blocks]
    assert kinds.count("background") >= 1 and kinds.count("run") >= 3, kinds
    assert setup_command((ROOT / "README.md").read_text()) is None  # the README starts from a fresh clone
    for block in blocks:
        if block.kind == "background":
            assert len([line for line in block.text.splitlines() if line.strip()]) == 1, block.text
        if block.kind == "not-run":
            print(f"README line {block.line}: not run: {block.reason}")


DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 300
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_short_and_every_docs_page_is_linked():
    """The README is the front page (what it is, the quick start, where to read on), not the manual; the
    manual is docs/, and a page nobody links to is a page nobody finds."""
    readme = (ROOT / "README.md").read_text()
    lines = len(readme.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES}: move text to docs/"
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme)}
    index = ROOT / "docs" / "README.md"
    assert index.is_file(), "docs/README.md, the index of the manual, is missing"
    linked |= {(index.parent / target).resolve() for target in LINK.findall(index.read_text())}
    unlinked = [page.name for page in DOCS if page != index and page.resolve() not in linked]
    assert not unlinked, f"docs pages linked neither from README.md nor from docs/README.md: {unlinked}"
    missing = sorted(str(p.relative_to(ROOT)) for p in linked if p.suffix == ".md" and not p.exists())
    assert not missing, f"links to pages that do not exist: {missing}"


def test_the_manual_still_runs_its_journey():
    """Seconds: moving text between the README and docs/ never marks the journey away. The README and
    the pages together run the pipeline, serve, score, plan, measure and check drift."""
    ran = [
        block.text
        for page in [ROOT / "README.md", *DOCS]
        for block in parse_blocks(page.read_text())
        if block.kind != "not-run"
    ]
    assert len(ran) >= 15, f"only {len(ran)} runnable blocks in the README and docs/"
    for command in ("churnflow run", "churnflow serve", "churnflow score", "churnflow plan", "churnflow drift"):
        assert any(command in text for text in ran), f"no runnable block runs {command!r}"
    assert sum("bash scripts/demo.sh" in text for text in ran) == 1


OUR_PATH = re.compile(
    r"(?<![\w./-])((?:churnflow|predictor|pipelines|components|bench|scripts|manifests|examples)/[\w./-]*\w/?)"
)
PACKAGE_PATH = re.compile(r"(?<![\w./-])((?:churnflow|predictor|pipelines)/[\w./-]*\w/?)")


def test_the_manual_names_only_files_that_exist():
    """Seconds: modules move (alignment.py became request_decoding.py, ...); a path the README or a page
    names in backticks must still be there. In docs/ only the package's own folders are checked: the
    pages also quote upstream files (kubeflow's components/..., tests/...) that are not ours."""
    missing = []
    for page in [ROOT / "README.md", *DOCS]:
        pattern = OUR_PATH if page.name == "README.md" and page.parent == ROOT else PACKAGE_PATH
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            missing += [f"{page.name}: {path}" for path in pattern.findall(span) if not (ROOT / path).exists()]
    assert not missing, f"paths that do not exist: {missing}"


@pytest.fixture(scope="session")
def set_up_copies(tmp_path_factory):
    """Copies of the repository after a page's setup command, each command run once per session."""
    done: dict[str, Path] = {}

    def copy(command: str, target: Path) -> None:
        if command not in done:
            base = tmp_path_factory.mktemp("setup") / "churnflow"
            base.mkdir()
            fresh_copy(base)
            ran = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", command],
                cwd=base,
                env=readme_env(free_port()),
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert ran.returncode == 0, (
                f"setup {command!r}: exit status {ran.returncode}\n{ran.stdout[-4000:]}\n{ran.stderr[-4000:]}"
            )
            done[command] = base
        shutil.copytree(done[command], target, symlinks=True)

    return copy


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_the_docs_run_as_written(page, tmp_path, set_up_copies):
    """docs/ follows the README's convention: each ```bash block runs, in order, in a fresh copy of the
    repository (or a copy after the page's setup command), or carries a not-run marker with its reason."""
    text = page.read_text()
    blocks = parse_blocks(text)
    for block in blocks:
        if block.kind == "not-run":
            print(f"{page.name} line {block.line}: not run: {block.reason}")
    if all(block.kind == "not-run" for block in blocks):
        return
    workdir = tmp_path / "churnflow"
    command = setup_command(text)
    if command:
        set_up_copies(command, workdir)
    else:
        workdir.mkdir()
        fresh_copy(workdir)
    for line, what, seconds in run_readme((workdir / "docs" / page.name).read_text(), workdir, free_port()):
        print(f"{page.name} line {line:4d}: {what} ({seconds:.1f} s)")


def venv_is_current() -> bool:
    """Whether scripts/setup.sh would leave the .venv alone (its stamp: SHA-256 of pyproject + constraints).

    scripts/demo.sh runs setup.sh from the copy; with a stale stamp it would re-install churnflow into
    the project's .venv from the temporary copy, which is deleted after the test.
    """
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()).hexdigest()
    stamp = VENV / ".churnflow-installed"
    return stamp.is_file() and stamp.read_text().strip() == want


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test copies the repository as git tracks it: it needs git and the project's checkout")
    if not venv_is_current():
        pytest.fail(f"{VENV} is older than pyproject.toml/constraints.txt: run `bash scripts/setup.sh` first")
    workdir = tmp_path / "churnflow"
    workdir.mkdir()
    fresh_copy(workdir)
    readme = (workdir / "README.md").read_text()
    started = time.monotonic()
    timings = run_readme(readme, workdir, free_port())
    for line, what, seconds in timings:
        print(f"README line {line:4d}: {what} ({seconds:.1f} s)")
    print(f"README: {time.monotonic() - started:.0f} s in all")
    ran = [t for t in timings if not t[1].startswith("not run")]
    assert len(ran) >= 4, timings  # the quick start is never marked away (the rest: the manual's journey test)
