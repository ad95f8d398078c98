"""The steps of a transaction, one module a step, each with its undo (see `switch.flow.engine`)."""
