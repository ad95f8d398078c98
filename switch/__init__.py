"""airswitch: an ISO 8583 mobile top-up switch between payers and mobile operators."""

__version__ = "0.1.0"
