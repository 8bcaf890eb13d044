"""The control plane: versioned config store, REST API, auth, audit, fan-out, followers."""
