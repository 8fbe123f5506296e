"""scripts/audit.sh fails on a known vulnerability and says plainly when no vulnerability data could
be had (as here, where the package index has none), instead of passing quietly.

The vulnerability data comes from a local stand-in of the OSV query API serving one real advisory
(PYSEC-2018-28: requests before 2.20.0 sent Authorization headers on HTTPS→HTTP redirects)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ROOT = Path(__file__).resolve().parents[1]
ADVISORY = {
    "id": "PYSEC-2018-28",
    "aliases": ["CVE-2018-18074", "GHSA-x84v-xcm2-53pg"],
    "summary": "requests sends an HTTP Authorization header to an http URI upon an https-to-http redirect",
    "modified": "2021-06-10T06:51:00Z",
    "affected": [
        {
            "package": {"name": "requests", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}],
            "versions": ["2.19.0", "2.19.1"],
        }
    ],
}


def osv_query(request: Request) -> Response:
    """OSV's POST /v1/query for one PyPI package version: the advisories whose listed versions hold it."""
    query = json.loads(request.data)
    package = query.get("package", {})
    if package.get("ecosystem") != "PyPI" or not package.get("name") or not query.get("version"):
        return Response(json.dumps({"code": 3, "message": "Invalid query."}), 400, content_type="application/json")
    hits = [
        ADVISORY
        for affected in ADVISORY["affected"]
        if affected["package"]["name"] == package["name"].lower() and query["version"] in affected["versions"]
    ]
    return Response(json.dumps({"vulns": hits} if hits else {}), content_type="application/json")


@pytest.fixture
def osv(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/v1/query", method="POST").respond_with_handler(osv_query)
    return httpserver.url_for("/v1/query")


def audit(requirements: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "audit.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "CHURNFLOW_AUDIT_REQUIREMENTS": str(requirements), **env},
    )


def test_a_known_vulnerability_fails_the_audit_and_is_named(osv, tmp_path):
    pins = tmp_path / "constraints.txt"
    pins.write_text("requests==2.19.0\nsix==1.17.0\n")
    result = audit(pins, CHURNFLOW_AUDIT_OSV_URL=osv)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "requests 2.19.0: PYSEC-2018-28 (CVE-2018-18074, GHSA-x84v-xcm2-53pg); fixed in 2.20.0" in result.stdout


def test_no_known_vulnerability_passes_and_counts_what_was_audited(osv, tmp_path):
    pins = tmp_path / "constraints.txt"
    pins.write_text("requests==2.32.3\nsix==1.17.0\n")
    result = audit(pins, CHURNFLOW_AUDIT_OSV_URL=osv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "audit: no known vulnerabilities in 2 of 2 pinned packages"


def test_without_vulnerability_data_it_says_so_in_one_line(tmp_path):
    pins = tmp_path / "constraints.txt"
    pins.write_text("requests==2.19.0\n")
    # Nothing listens on port 9 of the loopback: the vulnerability service cannot be reached.
    result = audit(pins, CHURNFLOW_AUDIT_OSV_URL="http://127.0.0.1:9/v1/query")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: NOT AUDITED: no vulnerability data could be had here")
    strict = audit(pins, CHURNFLOW_AUDIT_OSV_URL="http://127.0.0.1:9/v1/query", CHURNFLOW_AUDIT_REQUIRE_DATA="1")
    assert strict.returncode == 1 and strict.stdout.startswith("audit: NOT AUDITED")
