"""Scoring the agents' conversations with deepeval's GEval: the metrics, the judge (an on-disk
cache over any custseg LLM provider, through the deepeval adapter), its calibration, and the
helpers behind the app's evaluation page."""
