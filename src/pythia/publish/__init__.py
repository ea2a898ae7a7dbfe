"""Writing to GitHub: proposal PRs and their branches, evidence, the dashboard, `/pythia` commands,
and the dry-run publisher that writes the same proposals to a folder instead."""
