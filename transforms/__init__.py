"""The composite transforms of the paystream graph, one concern per module.

``parse`` -> ``dedup`` -> ``masking`` -> ``enrich`` and ``velocity``; bad
records of every stage meet in the dead letters (``deadletter``); ``sinks``
write the results.
"""
