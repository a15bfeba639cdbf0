"""The CI script and the package metadata: what the tests need is what CI installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests import dovecot, postfix

ROOT = Path(__file__).resolve().parents[1]
RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_ci_checks_the_binaries_the_tests_start() -> None:
    """`dovecot` on PATH is not enough: the tests exec the imap process and Postfix's master."""
    assert "/usr/lib/dovecot/imap" in Path(dovecot.__file__).read_text(encoding="utf-8")
    for path in ("/usr/lib/dovecot/imap", str(postfix.MASTER), "/usr/sbin/postfix"):
        assert f"-x {path} ]" in RUN, path
    assert "command -v systemd-analyze" in RUN


def test_readme_names_every_package_ci_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    packages = re.findall(r"need\+=\(([a-z0-9.-]+)\)", RUN)
    assert sorted(packages) == ["dovecot-imapd", "postfix", "systemd"]
    for package in packages:
        assert f"`{package}`" in readme, package


def test_every_dependency_has_an_upper_bound_and_the_license_is_spdx() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    unbounded = [r for r in requirements if "<" not in r]
    assert unbounded == []
    assert project["license"] == "Apache-2.0"
