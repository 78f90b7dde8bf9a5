"""Simulators of the providers' HTTP APIs, served on loopback.

The real providers cannot be reached from development and CI machines, so
editq's clients are tested against these over real HTTP, with faults injected
on demand. Only the CLI (`editq sim`, `demo`, `chaos`) and the tests start
them; the domain and the provider clients never import this package, so a
simulator can never stand in for a provider by accident in production.
"""
