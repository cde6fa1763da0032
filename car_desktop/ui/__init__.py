"""The desktop window (PySide6 only): canvas, tools, panels, dialogs and the worker threads.

Nothing here runs a model on the GUI thread: engine work goes through ``workers.JobRunner``.
"""
