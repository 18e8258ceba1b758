"""Seedable generator of realistic payment messages with labelled injections.

``simulator.generator`` builds the messages and their ground truth;
``python -m simulator.generate`` writes them to a JSON-lines file.
"""
