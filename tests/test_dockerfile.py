"""The Docker image installs like `make install`: every path that install reads is copied in before it runs.

(No container tool here to build it; this reads the Dockerfile, the Makefile and pyproject.toml.)
"""

import re
import tomllib

from helpers import REPO


def _copied_before_install() -> set[str]:
    copied: set[str] = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("RUN") and "make install" in line:
            return copied
        if line.startswith("COPY "):
            copied |= {p.rstrip("/").removeprefix("./") for p in line.split()[1:-1] if not p.startswith("--")}
    raise AssertionError("the Dockerfile never runs make install")


def _read_by_install() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("$(VENV)/.installed:"):].split("\n\n")[0]
    needed = set(recipe.splitlines()[0].split(":", 1)[1].split())  # the target's prerequisites
    needed.add("Makefile")
    for source in re.findall(r'pip install -q (?:-e )?"?(\.[^"\[\s]*)', recipe):  # local distributions
        folder = source.removeprefix("./").removeprefix(".") or "."
        needed.add(folder if folder != "." else "pyproject.toml")
        project = tomllib.loads((REPO / folder / "pyproject.toml").read_text())
        readme = project["project"].get("readme")
        if readme and folder == ".":
            needed.add(readme)
        if folder == ".":
            needed |= {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    return needed


def test_every_path_the_install_reads_is_copied_before_it_runs():
    copied = _copied_before_install()
    missing = {p for p in _read_by_install() if not any(p == c or p.startswith(c + "/") for c in copied)}
    assert not missing, f"the Dockerfile runs make install without {sorted(missing)}"
