"""ocppd: an OCPP-J charge point daemon for Linux-based EV chargers."""

# The one place the version lives; debian/changelog is checked against it (tests/packaging).
__version__ = "0.1.0"
