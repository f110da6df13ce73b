"""The audit log and the compliance report: the hash chain, its retention, report, metrics, job history."""
