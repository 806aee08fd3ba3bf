//! Docker engine adapter of safe-updater: discovery of containers on one or many engines.
