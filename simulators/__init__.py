"""Simulated peers of the switch: banks that send top-ups and operators that answer them."""
