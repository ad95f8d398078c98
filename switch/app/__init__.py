"""The application around the core: typed configuration, the running switch and its wiring
(`server.py`), worker processes, the `airswitch` command, the demo and the books' audit."""
