"""Running one deployment's objects in several processes: placement, leases, links."""
