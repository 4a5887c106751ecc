"""secureml: AI-security training labs with real attacks, real defences and honest scores."""

__version__ = "0.1.0"
