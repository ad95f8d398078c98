"""The transaction core: typed requests and answers, response codes, transaction states,
the engine that runs a transaction's participants, and the participants themselves.

Read `engine.py` top to bottom for the money path; each step is one file in `participants/`.
This package imports nothing on purpose, so `switch.flow.codes` and `switch.flow.states`
can be used by the journal and the channels without pulling the engine in.
"""
