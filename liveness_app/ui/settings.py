"""Settings remembered between runs (QSettings), resettable to the configuration's values.

Only what the user changed in the window is stored (source, model, backend, thresholds and smoothing,
window geometry, output folders); the command line and config file stay the source of defaults, and an
option given explicitly on the command line wins over a remembered value for that run.
The store lives in the platform's usual place (``~/.config/liveness-app/liveness.conf`` on Linux);
``LIVENESS_SETTINGS`` names an INI file instead (tests, kiosk images with a read-only home).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

log = logging.getLogger(__name__)

ORGANIZATION = "liveness-app"
APPLICATION = "liveness"
_PREFIX = "remembered/"


class SettingsStore:
    """Typed get/set over QSettings; values are JSON so floats, ints, strings and None round-trip exactly."""

    def __init__(self, path: str | Path | None = None):
        path = path or os.environ.get("LIVENESS_SETTINGS")
        if path:
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)

    @property
    def path(self) -> str:
        return self._qs.fileName()

    def values(self) -> dict[str, Any]:
        """Every remembered pipeline/UI value (not geometry), decoded."""
        out: dict[str, Any] = {}
        for key in self._qs.allKeys():
            if not key.startswith(_PREFIX):
                continue
            raw = self._qs.value(key)
            try:
                out[key[len(_PREFIX):]] = json.loads(str(raw))
            except (TypeError, ValueError):
                log.warning("ignoring unreadable remembered setting %s=%r in %s", key, raw, self.path)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        return self.values().get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._qs.setValue(_PREFIX + key, json.dumps(value))

    def update(self, values: dict[str, Any]) -> None:
        """Remember ``values``; QSettings writes the file later (and at ``sync``), not on every slider step."""
        for k, v in values.items():
            self.set(k, v)

    def geometry(self) -> QByteArray | None:
        g = self._qs.value("window/geometry")
        return g if isinstance(g, QByteArray) and not g.isEmpty() else None

    def set_geometry(self, geometry: QByteArray) -> None:
        self._qs.setValue("window/geometry", geometry)

    def sync(self) -> None:
        self._qs.sync()

    def reset(self) -> None:
        """Forget everything remembered (the next start uses the command line and config file alone)."""
        self._qs.clear()
        self._qs.sync()
        log.info("remembered settings cleared (%s)", self.path)
