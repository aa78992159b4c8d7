"""Disks: the CoreOS layout, block-device plumbing, GPT reading/planning, resize."""
