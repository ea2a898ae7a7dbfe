"""Pythia keeps a project's documentation in step with what its community asks in chat."""

__version__ = "0.1.0"

# The configuration reference, linked from error messages: a docs repository has no copy of
# config/pythia.example.yml. OWNER is the same placeholder as in the README's
# `uses: OWNER/pythia@v1`; set both to the published repository when releasing.
CONFIG_REFERENCE = "https://github.com/OWNER/pythia/blob/v1/config/pythia.example.yml"
