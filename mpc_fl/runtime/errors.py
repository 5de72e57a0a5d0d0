"""Errors of the runtime that name the party or the link at fault."""

from __future__ import annotations


class PartyConnectionError(RuntimeError):
    """A party could not be reached, was refused, or dropped out; the message names it."""


class LinkIntegrityError(PartyConnectionError):
    """A message on a link failed authentication: it was altered, dropped, replayed or injected."""


class ProtocolMismatchError(RuntimeError):
    """A peer sent something this party's protocol did not expect (different protocol or version)."""
