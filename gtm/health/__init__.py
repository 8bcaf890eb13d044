"""Health checking for the GTM tier: probes, rise/fall state, quorum, and the overlay
that merges health facts into the steering state the DNS answers from."""
