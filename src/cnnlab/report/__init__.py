"""`cnnlab report`: one self-contained HTML page per run.

    report.py    the page: configuration, model, data, training, the task's sections, filters, maps
    data.py      what the page shows, gathered from the run folder (and `evaluate` if needed)
    sections.py  the classification and regression sections, and the blocks other tasks build theirs from
    html.py      inlined pictures, tables, the page and its style

Calling the package runs it: `cnnlab.report(run)` is `cnnlab.report.report.report` (see there for the arguments).
"""

from cnnlab._callable_module import make_callable

make_callable(__name__, "cnnlab.report.report:report")
