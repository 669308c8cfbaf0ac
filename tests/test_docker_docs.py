"""docs/docker.md states the Docker Compose version docker-compose.yml needs.

No Docker engine runs here: the version is worked out from the attributes the file
uses and the release the Compose file reference gives for each newer one.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

#: Attributes of the Compose file reference that name the Compose release introducing
#: them ("Introduced in Docker Compose version ..."), as (path test, version).
VERSIONED = {
    "services.*.depends_on.*.required": (2, 20, 0),
    "services.*.depends_on.*.restart": (2, 17, 0),
    "services.*.attach": (2, 20, 0),
    "services.*.develop": (2, 22, 0),
    "services.*.env_file[].required": (2, 24, 0),
}


def _used(compose: dict) -> set[str]:
    used = set()
    for service in compose.get("services", {}).values():
        deps = service.get("depends_on") or {}
        for dep in deps.values() if isinstance(deps, dict) else []:
            used |= {f"services.*.depends_on.*.{key}" for key in ("required", "restart")
                     if key in dep}
        used |= {f"services.*.{key}" for key in ("attach", "develop") if key in service}
        env_files = service.get("env_file") or []
        if isinstance(env_files, list) and any(isinstance(e, dict) and "required" in e
                                               for e in env_files):
            used.add("services.*.env_file[].required")
    return used


def test_docs_state_the_compose_version_the_file_needs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    used = _used(compose)
    assert "services.*.depends_on.*.required" in used  # the s3 service is optional
    assert compose.get("name") == "streamlearn"
    needed = max(VERSIONED[key] for key in used)

    doc = (ROOT / "docs" / "docker.md").read_text()
    stated = re.search(r"^## Docker Compose (\d+)\.(\d+) or newer$", doc, re.MULTILINE)
    assert stated, "docs/docker.md has no '## Docker Compose X.Y or newer' section"
    assert (int(stated[1]), int(stated[2])) == needed[:2]
    assert f"v{needed[0]}.{needed[1]}.{needed[2]}" in doc
