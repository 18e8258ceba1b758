"""paystream: the card-payment pipeline. ``python -m beam_pipeline --help`` lists the options."""
