"""What every scenario measures with: process stats, targets, peers, reports and tables."""
