"""What every scenario measures with: process stats, targets and peers, the proxy's admin
endpoint, databases, percentiles, tables and reports. It imports neither bench/load/ nor
bench/scenarios/."""
