"""Shared plumbing: external commands, sizes, logging. Nothing domain-specific lives here."""
