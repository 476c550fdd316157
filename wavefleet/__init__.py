"""WAVE: teams of AI software-development agents run as a fleet on Redis and RQ.

The import name is ``wavefleet`` because Python's standard library already owns ``wave``
(the WAV audio reader), which would shadow a package of that name.
"""

__version__ = "0.1.0"
