"""What one payment goes through, as plain Python: no Beam is imported here.

``parse`` (bytes -> ``Transaction`` or a dead letter), ``masking`` (masks and keyed
tokens), ``features``, ``books`` (dedup, and each payment decided by its account's
book), ``rules`` with ``velocity`` and ``card_testing``, ``deadletter`` and ``codes``.
The drivers in ``transforms`` run them; tests hold each against a plain recount.
"""
