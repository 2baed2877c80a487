"""Presenters: the decision layer's values as text tables and JSON documents.

Nothing here decides anything: ``verdict`` shows a ``Judgement`` and its
``Decision`` (the table of ``inspect``/``check --images-dir``/``fix``, the JSON
document of docs/json-output.md), ``aio_check`` shows the AIO check's report.
Outside the lean core: plain idiomatic Python.
"""
