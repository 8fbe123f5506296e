#!/usr/bin/env bash
# Dependency audit: pip-audit over the pinned requirements (constraints.txt).
#   exit 1  a known vulnerability in a pinned version (listed, with the fixed versions);
#   exit 0  none known; or no vulnerability data could be had here, which is said in one line
#           starting "audit: NOT AUDITED" (CHURNFLOW_AUDIT_REQUIRE_DATA=1 makes that fatal too).
# CHURNFLOW_AUDIT_REQUIREMENTS audits another file; CHURNFLOW_AUDIT_OSV_URL queries an OSV-compatible
# service (e.g. a mirror of the OSV database) instead of PyPI's vulnerability data.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
requirements="${CHURNFLOW_AUDIT_REQUIREMENTS:-constraints.txt}"
service=(-s pypi)
[[ -n "${CHURNFLOW_AUDIT_OSV_URL:-}" ]] && service=(-s osv --osv-url "$CHURNFLOW_AUDIT_OSV_URL")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/pip-audit -r "$requirements" --no-deps --disable-pip --progress-spinner off --timeout 10 \
  "${service[@]}" -f json -o "$work/report.json" >"$work/log" 2>&1
.venv/bin/python - "$work/report.json" "$work/log" "$requirements" "${CHURNFLOW_AUDIT_REQUIRE_DATA:-0}" <<'EOF'
import json
import sys
from pathlib import Path

report_path, log_path, requirements, require_data = sys.argv[1:]
log = Path(log_path).read_text(errors="replace").strip().splitlines()
try:
    dependencies = json.loads(Path(report_path).read_text())["dependencies"]
except (OSError, ValueError, KeyError):
    reason = next((line for line in reversed(log) if "Error" in line), log[-1] if log else "no output")
    print(f"audit: NOT AUDITED: no vulnerability data could be had here ({reason.strip()[:200]})")
    sys.exit(1 if require_data == "1" else 0)
vulnerable = [d for d in dependencies if d.get("vulns")]
audited = [d for d in dependencies if "skip_reason" not in d]
if vulnerable:
    print(f"audit: known vulnerabilities in {len(vulnerable)} pinned package(s) of {requirements}:")
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            aliases = f" ({', '.join(sorted(vuln['aliases']))})" if vuln.get("aliases") else ""  # pip-audit: a set
            print(f"  {dependency['name']} {dependency['version']}: {vuln['id']}{aliases}; fixed in {fixed}")
    sys.exit(1)
if not audited:
    print(
        f"audit: NOT AUDITED: no vulnerability data could be had here for any of the {len(dependencies)} "
        f"packages in {requirements} (the package index reachable has none); run it where it has"
    )
    sys.exit(1 if require_data == "1" else 0)
unknown = len(dependencies) - len(audited)
print(
    f"audit: no known vulnerabilities in {len(audited)} of {len(dependencies)} pinned packages"
    + (f"; {unknown} not audited (unknown to the vulnerability service)" if unknown else "")
)
EOF
