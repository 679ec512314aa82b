"""``kinsim conformance``: the SGP.22 conformance runner lives in the ``conformance`` package."""

from conformance.cli import register

__all__ = ["register"]
