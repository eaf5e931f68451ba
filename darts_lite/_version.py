"""darts_lite's version, in a module of its own: run records and saved models stamp it without importing the
package's face (darts_lite/__init__.py), and setup.cfg reads it without importing anything."""

__version__ = "0.3.0"
