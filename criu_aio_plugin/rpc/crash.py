"""An exception and its traceback as one log line.

A worker's traceback must reach the log (a worker that dies behind
``os._exit`` tells nobody why), and as one line: the log has one line per
event, and a multi-line traceback interleaves with other workers' lines.
Walking the frames by hand costs no import (``traceback`` pulls in
``linecache`` and ``tokenize``), so ``swrk`` may use it too.
"""

from __future__ import annotations

_MAX_FRAMES = 12


def one_line(err: BaseException) -> str:
    """``Type: message [at file:line in function <- ...]``, innermost frame first."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    frames.reverse()
    if len(frames) > _MAX_FRAMES:
        frames = [*frames[:_MAX_FRAMES], f"... {len(frames) - _MAX_FRAMES} more"]
    where = f" [at {' <- '.join(frames)}]" if frames else ""
    text = str(err).replace("\n", "\\n")
    return f"{type(err).__name__}: {text}{where}"
