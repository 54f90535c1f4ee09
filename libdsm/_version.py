"""The one place the libdsm version is written.  The build stamps it into
the C core, and `_binding` refuses a core stamped with another."""
__version__ = "0.2.0"
