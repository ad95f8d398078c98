"""The operator side: dialect adapters, links in either direction, and per-operator pools."""
