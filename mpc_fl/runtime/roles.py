"""The members' role names, in one place (a leaf: every layer may read it cheaply)."""

BANK = "bank"
DEALER = "dealer"


def provider_roles(n_providers: int) -> list[str]:
    """The providers' roles in rank order: ``provider`` alone, else ``provider1``, ``provider2``, ..."""
    return ["provider"] if n_providers == 1 else [f"provider{i + 1}" for i in range(n_providers)]
