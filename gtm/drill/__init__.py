"""`gtm drill`: failover drills that plan, guard, inject, watch, abort, restore and
report, against the control plane (which keeps them and undoes their faults at expiry)."""
