"""The kiosk deployment files agree with the app: the example config loads, the units start the kiosk with it."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from liveness_app.config import load_config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
COMMAND = "main.py --kiosk --config /etc/liveness/kiosk.toml"


def test_example_kiosk_config_is_valid() -> None:
    c = load_config(DEPLOY / "kiosk.toml")
    assert c.kiosk and isinstance(c.source, int)
    pytest.importorskip("PySide6")
    from PySide6.QtGui import QKeySequence
    seq = QKeySequence(c.kiosk_exit_sequence)
    assert seq.count() == 1 and seq.toString() == c.kiosk_exit_sequence


def test_systemd_unit_and_autostart_entry_start_the_kiosk() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(DEPLOY / "liveness-kiosk.service")
    assert unit["Service"]["ExecStart"].endswith(COMMAND)
    assert unit["Service"]["Restart"] == "on-failure"  # the exit sequence (exit 0) must not bring it back
    assert unit["Install"]["WantedBy"] == "graphical-session.target"
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.optionxform = str
    desktop.read(DEPLOY / "liveness-kiosk.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"].endswith(COMMAND)
