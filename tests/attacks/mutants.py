"""Mutants that reuse a one-time pad and still compute exactly: positive controls for freshness tests.

Why exact: a mutant whose results are wrong could be flagged for the wrong reason (garbage
values, not the repeated pad), and would not show that a correct-looking protocol leaks.
"""

from __future__ import annotations

from collections.abc import Callable


def reuse_plan_draw(monkeypatch, kind: str, draw: int) -> None:  # noqa: ANN001
    """Every plan item of ``kind`` (:mod:`mpc_fl.crypto.preprocessing`) gets the same value for its
    ``draw``-th draw from each party's dealer stream: the first such item's, for items of one mask
    (a ``tmatvec``'s key) and size. Parties and the dealer reuse alike, so the correlation stays
    consistent and the results exact; every draw still advances its stream (all stay in step).

    E.g. ``("tmatvec", 0)``: SS-LR's gradient pad ``b_q`` in every iteration; ``("private_bits", 1)``:
    the owner's bit pad ``c`` in every product with private bits. Patch before the parties fork.
    """
    from mpc_fl.crypto import dealer, preprocessing

    state: dict = {"item": ("",), "drawn": {}}
    first: dict = {}
    item_sizes, init, corrections = (
        preprocessing.item_sizes,
        preprocessing.Preprocessed.__init__,
        dealer.dealer_corrections,
    )

    def sizes(item, plan, shapes):  # noqa: ANN001, ANN202 - both sides call it once per item, before its draws
        state["item"], state["drawn"] = item, {}
        return item_sizes(item, plan, shapes)

    def reusing(i: int, stream: Callable) -> Callable:
        """Stream ``i`` (a party holds its own, the dealer every party's)."""

        def draw_reused(n: int):  # noqa: ANN202
            out, item = stream(n), state["item"]
            k = state["drawn"].get(i, 0)
            state["drawn"][i] = k + 1
            if item[0] == kind and k == draw:
                mask = item[1] if len(item) > 1 and isinstance(item[1], str) else None
                return first.setdefault((i, mask, n), out)
            return out

        return draw_reused

    def party_init(self, plan, draw_ring, correction_bytes, mask_shapes):  # noqa: ANN001, ANN202
        init(self, plan, reusing(0, draw_ring), correction_bytes, mask_shapes)

    def dealer_side(plan, streams, masks):  # noqa: ANN001, ANN202
        return corrections(plan, [reusing(i, s) for i, s in enumerate(streams)], masks)

    monkeypatch.setattr(preprocessing, "item_sizes", sizes)
    monkeypatch.setattr(preprocessing.Preprocessed, "__init__", party_init)
    monkeypatch.setattr(dealer, "dealer_corrections", dealer_side)
