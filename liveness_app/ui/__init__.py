"""The PySide6 user interface; with ``ui/worker.py`` the only part of the app that imports Qt.

``app.run_gui(config)`` is the entry point; ``main_window.MainWindow`` and ``kiosk.KioskWindow`` are the two
faces of the app; ``worker`` bridges the engine's thread to the GUI thread.
"""
