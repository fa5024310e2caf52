"""The wheel is what `pip install soak` (or pipx) gets: it must carry the ready profiles,
and soak must find them outside a clone."""

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return next(out.glob("soak-*.whl"))


def test_the_wheel_carries_every_ready_profile(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/data/share/soak/profiles/" in n}
    assert shipped == {p.name for p in (REPO / "profiles").glob("*.toml")}
    assert not any(n.startswith("profiles/") for n in names)  # not a top-level package


def test_the_wheel_carries_the_grafana_dashboard(wheel):
    """The dashboard for --metrics-port ships as package data, importable from anywhere."""
    archive = zipfile.ZipFile(wheel)
    shipped = json.loads(archive.read("soak/dashboards/grafana-soak.json"))
    assert shipped == json.loads((REPO / "soak" / "dashboards" / "grafana-soak.json").read_text())
    assert [i["name"] for i in shipped["__inputs"]] == ["DS_PROMETHEUS"]


def test_the_wheel_carries_the_chart_script_the_report_inlines(wheel):
    archive = zipfile.ZipFile(wheel)
    for name in ("charts.js", "charts.css"):
        shipped = archive.read(f"soak/report/assets/{name}")
        assert shipped == (REPO / "soak" / "report" / "assets" / name).read_bytes()


def test_the_wheel_carries_the_html_templates(wheel):
    """report.html, compare.html and release.html are rendered from package data."""
    archive = zipfile.ZipFile(wheel)
    shipped = {Path(n).name for n in archive.namelist() if n.startswith("soak/templates/")}
    assert shipped == {p.name for p in (REPO / "soak" / "templates").glob("*.html")}
    assert {"base.html", "macros.html", "report.html", "compare.html", "release.html"} <= shipped


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(prefix, site-packages) of the wheel laid out as an installer would
    (`soak-*.data/data/` under the prefix, the rest in site-packages), by hand: pip would
    uninstall the soak of this virtualenv."""
    prefix = tmp_path_factory.mktemp("installed") / "prefix"
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            head, _, rest = name.partition("/")
            if head.endswith(".data") and rest.startswith("data/"):
                destination = prefix / rest.removeprefix("data/")
            else:
                destination = site / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(name))
    return prefix, site


def _probe(installed: tuple[Path, Path], cwd: Path, code: str) -> list[str]:
    """The output lines of `code` run by the installed soak, outside a clone."""
    prefix, site = installed
    probe = (
        f"import sys; sys.prefix = {str(prefix)!r}\n"
        "import soak; assert soak.__file__.startswith(sys.prefix), soak.__file__\n" + code
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True,
        env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_an_installed_soak_finds_its_profiles_outside_a_clone(installed, tmp_path):
    prefix, _ = installed
    first, second = _probe(
        installed,
        tmp_path,
        "from soak.profile import load_profile\n"
        "from soak.demo import default_profile\n"
        "print(default_profile())\n"
        "print(load_profile('nerve').name, load_profile('profiles/jsonrpc-gateway.toml').name)\n",
    )
    assert first == str(prefix / "share" / "soak" / "profiles" / "demo.toml")
    assert second.split() == ["nerve", "jsonrpc-gateway"]


def test_an_installed_soak_renders_its_templates(installed, tmp_path):
    _, site = installed
    [where, page] = _probe(
        installed,
        tmp_path,
        "from soak.report.templating import environment, render\n"
        "print(environment().get_template('release.html').filename)\n"
        "print(render('base.html', soak_version='<b>').replace('\\n', ' '))\n",
    )
    assert where == str(site / "soak" / "templates" / "release.html")
    assert "Written by soak &lt;b&gt;." in page and "<style>" in page
