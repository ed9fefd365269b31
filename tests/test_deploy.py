"""deploy/edgeasc-listen.service: the unit a Pi owner installs. systemd-analyze verify accepts
it (where systemd is installed), it runs `listen --events --mqtt` at boot, restarts on failure,
and keeps credentials off the command line."""

import configparser
import shutil
import subprocess

import pytest

from conftest import ROOT

UNIT = ROOT / "deploy" / "edgeasc-listen.service"


def _sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_listens_for_events_at_boot_restarts_and_hides_credentials():
    unit = _sections()
    exec_start = unit["Service"]["ExecStart"].split()
    assert exec_start[:2] == ["/opt/edgeasc/venv/bin/edgeasc", "listen"]
    assert "--events" in exec_start and exec_start[exec_start.index("--mqtt") + 1] == "${EDGEASC_MQTT_URL}"
    assert not any(word in " ".join(exec_start).lower() for word in ("password", "username", "@"))
    assert unit["Service"]["Restart"] == "on-failure" and unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["EnvironmentFile"] == "/etc/edgeasc/listen.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"] and "network-online.target" in unit["Unit"]["Wants"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at this checkout's interpreter
    exe = shutil.which("python3")
    unit = tmp_path / "edgeasc-listen.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgeasc/venv/bin/edgeasc", exe))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    broken = tmp_path / "broken.service"  # the check is not blind: a bad value is reported
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    proc = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "sometimes" in proc.stderr
