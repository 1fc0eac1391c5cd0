"""The rolling MIG reconfiguration: per-node record, plan, cluster-wide lock, report."""
